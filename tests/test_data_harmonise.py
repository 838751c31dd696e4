"""Channel names, BIDS reading/eligibility and harmonisation to the input contract."""

from __future__ import annotations

import shutil
from pathlib import Path

import mne
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedneuro.data import cache as cache_mod
from fedneuro.data import harmonise as harmonise_mod
from fedneuro.data.bids import (
    BIDSDatasetError,
    eligible_participants,
    read_participants,
    recordings_for,
)
from fedneuro.data.channels import map_to_montage, normalise_channel_name
from fedneuro.data.harmonise import (
    HarmonisationError,
    WindowSet,
    harmonise_recording,
    load_site_windows,
)
from fedneuro.data.spec import DataSpec, InputContract
from fedneuro.data.splits import split_window_set
from fedneuro.data.synth import STANDARD_1020_19

pytestmark = pytest.mark.filterwarnings("error")


# ----------------------------------------------------------------------------- channels
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("EEG Fp1-REF", "Fp1"), ("EEG FP1-LE", "Fp1"), ("FP1", "Fp1"), ("fp1", "Fp1"),
        ("Fp1-A1", "Fp1"), ("EEG Fz-REF", "Fz"), ("O1", "O1"), ("CZ", "Cz"), ("FPZ", "Fpz"),
        ("T3", "T7"), ("EEG T4-REF", "T8"), ("t5", "P7"), ("T6-AVG", "P8"),
        ("ECG", "ECG"), (" ECG ", "ECG"), ("Fp1-F7", "Fp1-F7"), ("Fz-Cz", "Fz-Cz"),
    ],
)
def test_normalise_channel_name(name: str, expected: str) -> None:
    assert normalise_channel_name(name) == expected


def test_map_to_montage_and_duplicates() -> None:
    names = ["EEG T3-REF", "ECG", "EEG Fp1-REF", "EEG O1-REF"]
    m = map_to_montage(names, ["Fp1", "T7", "Fz", "O1"])
    assert m.source_index == (2, 0, None, 3)
    assert m.missing == ("Fz",) and m.unused == ("ECG",) and m.found == ("Fp1", "T7", "O1")
    with pytest.raises(ValueError, match=r"\['Fp1', 'FP1-REF'\] -> 'Fp1'.*duplicates"):
        map_to_montage(["Fp1", "FP1-REF", "O1"], ["Fp1", "O1"])
    with pytest.raises(ValueError, match="'montage' parameter.*'T7'"):
        map_to_montage(["Fp1"], ["T3", "T7"])


# ----------------------------------------------------------------------------- bids
def _tsv(tmp_path: Path, text: str) -> Path:
    (tmp_path / "participants.tsv").write_text(text, encoding="utf-8")
    return tmp_path


def test_eligibility_and_reasons(tmp_path: Path, data_spec: DataSpec) -> None:
    root = _tsv(
        tmp_path,
        "participant_id\tage\tdiagnosis\tconsent\n"
        "sub-03\t40\tnormal\tyes\nsub-01\t50\tabnormal\tyes\nsub-02\t60\tnormal\tno\n"
        "sub-04\t30\tunknown\tyes\nsub-05\t20\tn/a\twithdrawn\nsub-06\t20\tnormal\tn/a\n",
    )
    records = read_participants(root, data_spec)
    assert [r.participant_id for r in records][:2] == ["sub-03", "sub-01"]
    assert records[0].row["age"] == "40" and records[4].label is None
    cohort = eligible_participants(records, data_spec)
    assert cohort.participant_ids == ("sub-01", "sub-03") and cohort.labels == (1, 0)
    assert set(cohort.excluded) == {"sub-02", "sub-04", "sub-05", "sub-06"}
    assert "consent 'no'" in cohort.excluded["sub-02"]
    assert "label 'unknown'" in cohort.excluded["sub-04"]
    assert "withdrawn" in cohort.excluded["sub-05"] and "empty" in cohort.excluded["sub-05"]
    assert "missing (n/a)" in cohort.excluded["sub-06"]
    no_consent = DataSpec(consent_column=None)
    assert len(eligible_participants(read_participants(root, no_consent), no_consent)) == 4


def test_bids_errors_name_file_and_fix(tmp_path: Path, data_spec: DataSpec) -> None:
    with pytest.raises(BIDSDatasetError, match=r"participants\.tsv not found.*'diagnosis'"):
        read_participants(tmp_path, data_spec)
    _tsv(tmp_path, "participant_id\tage\tsex\nsub-01\t3\tM\n")
    with pytest.raises(
        BIDSDatasetError,
        match=r"lacks the column\(s\) \['diagnosis', 'consent'\] \(columns found: "
        r"\['participant_id', 'age', 'sex'\]\).*label_column",
    ):
        read_participants(tmp_path, data_spec)
    _tsv(tmp_path, "participant_id\tdiagnosis\tconsent\nsub-01\tnormal\nsub-02\tnormal\tyes\n"
         "sub-02\tnormal\tyes\n")
    with pytest.raises(BIDSDatasetError, match="line 2 has 2 fields.*'sub-02' appears more"):
        read_participants(tmp_path, data_spec)
    with pytest.raises(BIDSDatasetError, match="'bids_root'.*not a directory"):
        read_participants(tmp_path / "nope", data_spec)


def test_recordings_for(data_consortium: dict[str, Path], data_spec: DataSpec) -> None:
    root = data_consortium["hospital-a"]
    paths = recordings_for(root, "sub-002", data_spec)
    assert paths == [root / "sub-002" / "eeg" / "sub-002_task-rest_eeg.edf"]
    assert recordings_for(root, "sub-002", DataSpec(task="sleep")) == []
    assert recordings_for(root, "sub-999", data_spec) == []


# ----------------------------------------------------------------------------- harmonise
def test_windows_match_contract_for_every_site(
    data_windows: dict[str, WindowSet], data_contract: InputContract
) -> None:
    for name, ws in data_windows.items():
        assert ws.X.shape[1:] == (19, data_contract.n_times) == (19, 800), name
        assert ws.X.dtype == np.float32 and ws.y.dtype == np.int64
        assert ws.participant.dtype == np.int64 and np.isfinite(ws.X).all()
        assert len(ws.participant_ids) >= 9 and set(np.unique(ws.y)) == {0, 1}
        assert ws.report.n_windows == len(ws.X) and not ws.report.refused
        rep = ws.report.recordings[0]
        assert rep.file.endswith("_task-rest_eeg.edf") and rep.participant_id
    reps = {n: ws.report.recordings[0] for n, ws in data_windows.items()}
    assert {r.source_sfreq for r in reps.values()} == {200.0, 256.0, 500.0}
    assert reps["hospital-b"].interpolated == ("Fz", "Pz")
    assert "Fz" not in reps["hospital-b"].channels_found
    assert reps["hospital-a"].interpolated == () and "ECG" in reps["hospital-a"].dropped
    assert reps["hospital-a"].notched == (60.0, 120.0)  # harmonics below Nyquist (128 Hz)
    assert reps["hospital-c"].notched == (50.0, 100.0, 150.0, 200.0)


def test_resampled_signal_keeps_its_frequencies(data_windows: dict[str, WindowSet]) -> None:
    # 500 Hz source -> 200 Hz windows: a normal participant's alpha stays near 10 Hz.
    ws = data_windows["hospital-c"]
    normal = ws.X[ws.y == 0][:, STANDARD_1020_19.index("O1")]
    spec = (np.abs(np.fft.rfft(normal, axis=-1)) ** 2).mean(0)
    f = np.fft.rfftfreq(normal.shape[-1], 1 / 200.0)
    band = (f >= 6) & (f <= 13)
    assert 9.0 <= f[band][np.argmax(spec[band])] <= 11.0
    assert spec[(f > 48) & (f < 52)].mean() < 1e-3 * spec[band].max()  # notched + low-passed


def test_recording_normalisation_cancels_site_gain(
    data_consortium: dict[str, Path],
    data_windows: dict[str, WindowSet],
    data_contract: InputContract,
) -> None:
    spec_none = DataSpec(normalisation="none")
    raw_std = {}
    for name in ("hospital-a", "hospital-b"):  # gains 1.4 and 0.7
        root = data_consortium[name]
        cohort = eligible_participants(read_participants(root, spec_none), spec_none)
        ws = load_site_windows(root, cohort, data_contract, spec_none)
        raw_std[name] = float(np.median(ws.X.std(axis=(1, 2))))
    norm_std = {n: float(np.median(data_windows[n].X.std(axis=(1, 2)))) for n in raw_std}
    assert raw_std["hospital-a"] / raw_std["hospital-b"] > 1.6
    assert 0.8 < norm_std["hospital-a"] / norm_std["hospital-b"] < 1.25
    assert 0.05 < raw_std["hospital-b"] < 1.0  # 100 µV == 1.0 under "none"


def test_too_many_missing_channels_is_refused(
    data_consortium: dict[str, Path], data_contract: InputContract
) -> None:
    root = data_consortium["hospital-b"]
    strict = DataSpec(max_missing_channels=1)
    raw = harmonise_mod.read_recording(root / "sub-001" / "eeg" / "sub-001_task-rest_eeg.edf")
    expected = r"sub-001_task-rest_eeg\.edf: 2 of the 19.*\['Fz', 'Pz'\].*allows 1"
    with pytest.raises(HarmonisationError, match=expected):
        harmonise_recording(raw, data_contract, strict)
    cohort = eligible_participants(read_participants(root, strict), strict)
    # Every refused file is listed in one error ...
    with pytest.raises(
        HarmonisationError, match=rf"(?s){len(cohort)} recording\(s\).*sub-001.*on_error='skip'"
    ):
        load_site_windows(root, cohort, data_contract, strict)
    # ... or left out and reported.
    ws = load_site_windows(root, cohort, data_contract, strict, on_error="skip")
    assert len(ws) == 0 and len(ws.report.refused) == len(cohort)


def test_flat_channel_is_interpolated_and_stride(
    data_consortium: dict[str, Path], data_contract: InputContract, data_spec: DataSpec
) -> None:
    edf = data_consortium["hospital-c"] / "sub-001" / "eeg" / "sub-001_task-rest_eeg.edf"
    raw = harmonise_mod.read_recording(edf)
    raw.load_data(verbose=False)
    data = raw.get_data()
    data[raw.ch_names.index("C3")] = 0.0
    mem = mne.io.RawArray(data, raw.info, verbose=False)
    win, rep = harmonise_recording(mem, data_contract, data_spec)
    assert rep.interpolated == ("C3",) and rep.file == "<in-memory recording>"
    assert win[:, STANDARD_1020_19.index("C3")].std() > 0.1
    overlapping = DataSpec(window_stride_seconds=2.0)
    win2, rep2 = harmonise_recording(mem, data_contract, overlapping)
    assert rep2.n_windows + rep2.n_rejected == 2 * (rep.n_windows + rep.n_rejected) - 1


def test_only_eligible_files_are_opened(
    data_consortium: dict[str, Path],
    data_contract: InputContract,
    data_spec: DataSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "site"
    shutil.copytree(data_consortium["hospital-a"], root)
    cohort = eligible_participants(read_participants(root, data_spec), data_spec)
    assert cohort.excluded
    for pid in cohort.excluded:  # a non-consenting participant's data must never be read
        for edf in recordings_for(root, pid, data_spec):
            edf.write_bytes(b"not an EDF file" * 10)
    with pytest.raises(Exception):  # noqa: B017 - proves the corruption would be noticed
        harmonise_mod.read_recording(
            recordings_for(root, next(iter(cohort.excluded)), data_spec)[0]
        )

    opened: list[str] = []
    real = harmonise_mod.read_recording

    def spy(ref):  # type: ignore[no-untyped-def]
        opened.append(Path(ref.path).name.split("_")[0])
        return real(ref)

    hashed: list[str] = []
    real_digest = cache_mod.file_digest

    def digest_spy(path):  # type: ignore[no-untyped-def]
        hashed.append(Path(path).name.split("_")[0])
        return real_digest(path)

    monkeypatch.setattr(harmonise_mod, "read_recording", spy)
    monkeypatch.setattr(cache_mod, "file_digest", digest_spy)
    ws = load_site_windows(root, cohort, data_contract, data_spec, cache_dir=tmp_path / "cache")
    assert sorted(opened) == list(cohort.participant_ids) == ws.participant_ids
    assert not set(opened) & set(cohort.excluded)
    assert set(hashed) == set(cohort.participant_ids)  # cache keys hash eligible files only


def _log_bandpower(X: np.ndarray, sfreq: float = 200.0) -> np.ndarray:
    power = np.abs(np.fft.rfft(X, axis=-1)) ** 2
    f = np.fft.rfftfreq(X.shape[-1], 1 / sfreq)
    bands = [(1, 4), (4, 8), (8, 13), (13, 30)]
    feats = np.stack([power[..., (f >= lo) & (f < hi)].mean(-1) for lo, hi in bands], -1)
    return np.log(feats + 1e-12).reshape(len(X), -1)


def test_task_is_learnable_on_held_out_participants(data_windows: dict[str, WindowSet]) -> None:
    splits = [split_window_set(ws, test_fraction=0.3, seed=0) for ws in data_windows.values()]
    Xtr = np.concatenate([_log_bandpower(tr.X) for tr, _ in splits])
    ytr = np.concatenate([tr.y for tr, _ in splits])
    Xte = np.concatenate([_log_bandpower(te.X) for _, te in splits])
    yte = np.concatenate([te.y for _, te in splits])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(Xtr, ytr)
    assert balanced_accuracy_score(yte, clf.predict(Xte)) >= 0.8
