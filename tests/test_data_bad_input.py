"""Malformed EEG files and datasets: each gives an error naming the file and the problem,
and the rest of the site still loads (on_error="skip")."""

from __future__ import annotations

import re
import shutil
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import mne
import numpy as np
import pytest
import scipy.io

from fedneuro.data.bids import BIDSDatasetError, eligible_participants, read_participants
from fedneuro.data.check import check_site
from fedneuro.data.harmonise import HarmonisationError, load_site_windows
from fedneuro.data.spec import DataSpec, InputContract
from fedneuro.data.synth import STANDARD_1020_19, synthesize_site

pytestmark = pytest.mark.filterwarnings("error")

SFREQ = 200.0
SECONDS = 8.0


def _raw(
    names: tuple[str, ...] = (*STANDARD_1020_19, "A1", "A2"),
    sfreq: float = SFREQ,
    seconds: float = SECONDS,
    seed: int = 0,
) -> mne.io.RawArray:
    rng = np.random.default_rng(seed)
    n = int(sfreq * seconds)
    t = np.arange(n) / sfreq
    data = 8e-6 * rng.standard_normal((len(names), n)) + 10e-6 * np.sin(2 * np.pi * 10 * t)
    info = mne.create_info(list(names), sfreq, "eeg", verbose=False)
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.info["line_freq"] = 50.0
    return raw


def _write(raw: mne.io.BaseRaw, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".fif":
        raw.save(path, overwrite=True, verbose=False)
        return path
    fmt = {".edf": "edf", ".bdf": "bdf", ".vhdr": "brainvision", ".set": "eeglab"}[path.suffix]
    with warnings.catch_warnings(), mne.use_log_level("error"):
        warnings.filterwarnings("ignore", message="Encountered data in 'double' format")
        mne.export.export_raw(path, raw, fmt=fmt, overwrite=True, verbose=False)
    return path


def _site(root: Path, files: dict[str, str]) -> Path:
    """A loose site: ``files`` maps relative path -> participant id (label alternates)."""
    root.mkdir(parents=True, exist_ok=True)
    pids = list(dict.fromkeys(files.values()))
    labels = ["normal", "abnormal"]
    (root / "participants.tsv").write_text(
        "participant_id\tdiagnosis\tconsent\n"
        + "".join(f"{p}\t{labels[i % 2]}\tyes\n" for i, p in enumerate(pids)),
        encoding="utf-8",
    )
    (root / "recordings.tsv").write_text(
        "path\tparticipant_id\tline_freq\n"
        + "".join(f"{rel}\t{pid}\t50\n" for rel, pid in files.items()),
        encoding="utf-8",
    )
    return root


def _patch(path: Path, offset: int, text: bytes) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset : offset + len(text)] = text
    path.write_bytes(bytes(blob))


def _edf_ns(path: Path) -> int:
    return int(path.read_bytes()[252:256])


# --------------------------------------------------------------------------- bad files
# Each builder writes a bad file under ``d`` and returns its relative path and the message.
Builder = Callable[[Path], tuple[str, str]]


def _zero_length(d: Path) -> tuple[str, str]:
    (d / "bad.edf").write_bytes(b"")
    return "bad.edf", r"the file is empty \(0 bytes\)"


def _truncated_edf(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.edf")
    p.write_bytes(p.read_bytes()[: -3000])
    return "bad.edf", r"truncated: the header declares 8 data records .* complete records\)"


def _edf_lies_about_records(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.edf")
    _patch(p, 236, b"3       ")
    return "bad.edf", r"header declares 3 data records .*\(8 complete records\).*record count is wrong"


def _edf_record_count_not_a_number(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.edf")
    _patch(p, 236, b"abc     ")
    return "bad.edf", r"'number of data records' holds 'abc', not a number"


def _not_an_edf(d: Path) -> tuple[str, str]:
    (d / "bad.edf").write_bytes(b"this is a text file, not EEG\n" * 40)
    return "bad.edf", r"does not start with an EDF header"


def _edf_zero_record_duration(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.edf")
    _patch(p, 244, b"0       ")
    return "bad.edf", r"data record duration is 0.0 s"


def _edf_duplicate_labels(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.edf")
    _patch(p, 256 + 16, b"Fp1".ljust(16))  # second label := first
    return "bad.edf", r"channel label\(s\) \['Fp1'\] appear more than once"


def _edf_flat_digital_range(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.edf")
    ns = _edf_ns(p)
    dig_min, dig_max = 256 + ns * 120, 256 + ns * 128
    _patch(p, dig_max, p.read_bytes()[dig_min : dig_min + 8])
    return "bad.edf", r"\['Fp1'\] have a digital maximum not above their digital minimum"


def _bdf_truncated(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.bdf")
    p.write_bytes(p.read_bytes()[:-100])
    return "bad.bdf", r"truncated: the header declares 8 data records"


def _nan_samples(d: Path) -> tuple[str, str]:
    raw = _raw()
    raw._data[STANDARD_1020_19.index("Cz"), 100:110] = np.nan
    _write(raw, d / "bad_eeg.fif")
    return "bad_eeg.fif", r"10 sample\(s\) are NaN or infinite \(channels \['Cz'\]\)"


def _inf_samples(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.vhdr")
    eeg = p.with_suffix(".eeg")
    _patch(eeg, 4 * 5, struct.pack("<f", np.inf))  # 6th channel (F4), first sample
    return "bad.vhdr", r"1 sample\(s\) are NaN or infinite \(channels \['F4'\]\)"


def _only_non_eeg(d: Path) -> tuple[str, str]:
    _write(_raw(names=("ECG", "EMG chin", "RESP")), d / "bad.edf")
    return "bad.edf", r"no EEG channels \(channels and types: \{'ECG': 'ecg', 'EMG chin': 'emg'"


def _sampling_rate_too_low(d: Path) -> tuple[str, str]:
    _write(_raw(sfreq=50.0), d / "bad.edf")
    return "bad.edf", r"sampled at 50 Hz, below the 90 Hz the study accepts"


def _sampling_rate_absurd(d: Path) -> tuple[str, str]:
    _write(_raw(names=("Cz",), sfreq=100_000.0, seconds=0.2), d / "bad_eeg.fif")
    return "bad_eeg.fif", r"sampling rate 100000.0 Hz is not plausible for EEG"


def _bv_not_a_header(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.vhdr")
    p.write_text(p.read_text().replace("Brain Vision Data Exchange Header", "Some Other"))
    return "bad.vhdr", r"not a BrainVision header file \(first line 'Some Other"


def _bv_no_datafile(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.vhdr")
    p.write_text(re.sub(r"DataFile=.*\n", "", p.read_text()))
    return "bad.vhdr", r"the header has no DataFile entry"


def _bv_missing_eeg(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.vhdr")
    p.with_suffix(".eeg").unlink()
    return "bad.vhdr", r"its data file bad\.eeg is missing"


def _bv_truncated_eeg(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.vhdr")
    eeg = p.with_suffix(".eeg")
    eeg.write_bytes(eeg.read_bytes()[:-6])
    return "bad.vhdr", r"bad\.eeg: \d+ bytes is not a whole number of samples of 21 channels"


def _bv_corrupt_vmrk(d: Path) -> tuple[str, str]:
    raw = _raw()
    raw.set_annotations(mne.Annotations([1.0, 2.0], [0, 0], ["a", "b"]))
    p = _write(raw, d / "bad.vhdr")
    vmrk = p.with_suffix(".vmrk")
    vmrk.write_text(re.sub(r"(Mk2=Comment,b,)\d+", r"\1abc", vmrk.read_text()))
    return "bad.vhdr", r"bad\.vmrk: marker Mk2='Comment,b,abc,.*has no integer position"


def _bv_missing_vmrk(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.vhdr")
    p.with_suffix(".vmrk").unlink()
    return "bad.vhdr", r"its marker file bad\.vmrk is missing"


def _bv_duplicate_names(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.vhdr")
    p.write_text(p.read_text().replace("Ch2=Fp2,", "Ch2=Fp1,"))
    return "bad.vhdr", r"channel name\(s\) \['Fp1'\] appear more than once"


def _bv_zero_interval(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.vhdr")
    p.write_text(re.sub(r"SamplingInterval=.*", "SamplingInterval=0", p.read_text()))
    return "bad.vhdr", r"SamplingInterval=0.0 µs: both must be positive"


def _set_missing_fdt(d: Path) -> tuple[str, str]:
    p = _write(_raw(), d / "bad.set")
    mat = scipy.io.loadmat(p, appendmat=False)
    data = mat["data"]
    fields = {k: v for k, v in mat.items() if not k.startswith("__")}
    fields["data"] = "bad.fdt"  # EEGLAB's two-file layout: signal in a .fdt beside the .set
    scipy.io.savemat(p, fields, appendmat=False)
    np.asarray(data, dtype="<f4").reshape(-1, order="F").tofile(d / "bad.fdt")
    (d / "bad.fdt").unlink()
    return "bad.set", r"a file this EEGLAB recording needs is missing \(bad\.fdt\)"


def _set_corrupt(d: Path) -> tuple[str, str]:
    (d / "bad.set").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 50)
    return "bad.set", r"cannot be read as EEGLAB"


def _fif_garbage(d: Path) -> tuple[str, str]:
    (d / "bad_eeg.fif").write_bytes(b"\x00\x01garbage" * 100)
    return "bad_eeg.fif", r"cannot be read as FIF"


def _unsupported_format(d: Path) -> tuple[str, str]:
    (d / "bad.cnt").write_bytes(b"Neuroscan" * 10)
    return "bad.cnt", r"unsupported EEG format '\.cnt'"


def _listed_but_missing(d: Path) -> tuple[str, str]:
    return "bad.edf", r"file not found"


def _too_many_missing_channels(d: Path) -> tuple[str, str]:
    _write(_raw(names=("Fp1", "Fp2", "Cz", "O1", "O2")), d / "bad.edf")
    return "bad.edf", r"14 of the 19 montage channels are missing.*allows 4"


def _duplicate_after_normalisation(d: Path) -> tuple[str, str]:
    _write(_raw(names=(*STANDARD_1020_19, "EEG FP1-REF")), d / "bad.edf")
    return "bad.edf", r"Ambiguous channel names.*\['Fp1', 'EEG FP1-REF'\] -> 'Fp1'"


BAD_FILES: dict[str, Builder] = {
    f.__name__.lstrip("_"): f
    for f in (
        _zero_length, _truncated_edf, _edf_lies_about_records, _edf_record_count_not_a_number,
        _not_an_edf, _edf_zero_record_duration, _edf_duplicate_labels, _edf_flat_digital_range,
        _bdf_truncated, _nan_samples, _inf_samples, _only_non_eeg, _sampling_rate_too_low,
        _sampling_rate_absurd, _bv_not_a_header, _bv_no_datafile, _bv_missing_eeg,
        _bv_truncated_eeg, _bv_corrupt_vmrk, _bv_missing_vmrk, _bv_duplicate_names,
        _bv_zero_interval, _set_missing_fdt, _set_corrupt, _fif_garbage, _unsupported_format,
        _listed_but_missing, _too_many_missing_channels, _duplicate_after_normalisation,
    )
}


@pytest.fixture(scope="module")
def good_edf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(_raw(seed=1), tmp_path_factory.mktemp("good") / "good.edf")


@pytest.fixture(scope="module")
def contract() -> InputContract:
    return InputContract(channels=STANDARD_1020_19, sfreq=SFREQ, input_window_seconds=4.0)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_named_and_the_rest_loads(
    case: str, tmp_path: Path, good_edf: Path, contract: InputContract
) -> None:
    root = tmp_path / "site"
    (root / "bad").mkdir(parents=True)
    shutil.copy(good_edf, root / "good.edf")
    rel, message = BAD_FILES[case](root / "bad")
    _site(root, {"good.edf": "G1", f"bad/{rel}": "B1"})
    spec = DataSpec()
    cohort = eligible_participants(read_participants(root, spec), spec)
    # One error names the file and the problem ...
    with pytest.raises(HarmonisationError, match=rf"1 recording\(s\)(?s:.*)bad/{re.escape(rel)}: "
                       rf"(?s:.*){message}"):
        load_site_windows(root, cohort, contract, spec)
    # ... or the file is skipped, listed with its reason, and the rest still loads.
    ws = load_site_windows(root, cohort, contract, spec, on_error="skip", cache_dir=tmp_path / "c")
    assert list(ws.report.refused) == [f"bad/{rel}"]
    assert re.search(message, ws.report.refused[f"bad/{rel}"])
    assert ws.participant_ids == ["G1"] and len(ws) == 2
    # A refused file leaves nothing in the cache; the good one left exactly one entry.
    assert len(list((tmp_path / "c").rglob("*.win"))) == 1
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_every_bad_file_at_once_is_listed_by_the_check(
    tmp_path: Path, good_edf: Path, contract: InputContract
) -> None:
    root = tmp_path / "site"
    files: dict[str, str] = {}
    expected: dict[str, str] = {}
    for i, (case, build) in enumerate(BAD_FILES.items()):
        d = root / case
        d.mkdir(parents=True)
        rel, message = build(d)
        files[f"{case}/{rel}"] = f"B{i:02d}"
        expected[f"{case}/{rel}"] = message
    for k in range(4):
        shutil.copy(good_edf, root / f"good{k}.edf")
        files[f"good{k}.edf"] = f"G{k}"
    _site(root, files)
    report = check_site(root, DataSpec(), contract)
    problems = {p.file: p.reason for p in report.problems}
    for rel, message in expected.items():
        assert re.search(message, problems[rel]), (rel, problems[rel])
    ok = [r.file for r in report.recordings if r.status == "ok"]
    assert ok == [f"good{k}.edf" for k in range(4)]
    assert report.usable and report.n_windows == 8
    assert len(BAD_FILES) >= 25


# --------------------------------------------------------------------------- events
@pytest.fixture(scope="module")
def tiny_oddball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedneuro.data.synth import DEFAULT_PROFILES

    return synthesize_site(
        tmp_path_factory.mktemp("tiny-oddball"), DEFAULT_PROFILES[1], n_participants=4,
        duration_s=12.0, seed=3, task="oddball",
    )


def _events_tsv(root: Path, pid: str) -> Path:
    return root / pid / "eeg" / f"{pid}_task-oddball_events.tsv"


EVENT_CASES = {
    "missing_onset_column": (
        lambda t: t.replace("onset\t", "start\t", 1), r"lacks the column\(s\) \['onset'\]"),
    "onset_not_a_number": (
        lambda t: re.sub(r"\n[0-9.]+\t", "\nabc\t", t, count=1),
        r"malformed: line 2: onset 'abc' is not a number"),
    "negative_onset": (
        lambda t: re.sub(r"\n[0-9.]+\t", "\n-1.5\t", t, count=1),
        r"line 2: onset '-1.5' is not a number >= 0"),
    "ragged_row": (lambda t: t + "5.0\t0\n", r"line \d+ has 2 fields, the header 5"),
    "missing_event_column": (
        lambda t: t.replace("trial_type", "kind"),
        r"lacks the column\(s\) \['trial_type'\].*data\.event_column"),
    "unknown_event_values": (
        lambda t: t.replace("standard", "std").replace("target", "tgt"),
        r"none of its \d+ events has a value of a study class \(values found: \['std', 'tgt'\]"),
    "empty_events_file": (lambda t: "", r"the events file is empty"),
}


@pytest.mark.parametrize("case", list(EVENT_CASES))
def test_bad_events_tsv_is_named(
    case: str, tmp_path: Path, tiny_oddball: Path, data_event_spec: DataSpec,
    data_event_contract: InputContract,
) -> None:
    root = tmp_path / "site"
    shutil.copytree(tiny_oddball, root)
    cohort = eligible_participants(read_participants(root, data_event_spec), data_event_spec)
    pid = cohort.participant_ids[0]
    edit, message = EVENT_CASES[case]
    tsv = _events_tsv(root, pid)
    tsv.write_text(edit(tsv.read_text(encoding="utf-8")), encoding="utf-8")
    ws = load_site_windows(root, cohort, data_event_contract, data_event_spec, on_error="skip")
    (refused,) = ws.report.refused.items()
    assert refused[0] == f"{pid}/eeg/{pid}_task-oddball_eeg.edf"
    assert re.search(rf"{tsv.name}.*{message}|{message}", refused[1]), refused[1]
    assert ws.participant_ids == list(cohort.participant_ids[1:])


def test_events_mode_without_events_is_refused(
    tmp_path: Path, good_edf: Path, data_event_spec: DataSpec, data_event_contract: InputContract
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(good_edf, root / "good.edf")
    _site(root, {"good.edf": "G1"})
    cohort = eligible_participants(read_participants(root, data_event_spec), data_event_spec)
    with pytest.raises(HarmonisationError, match=r"good\.edf: has no events \(no events\.tsv, "
                       r"no annotations in the file\)"):
        load_site_windows(root, cohort, data_event_contract, data_event_spec)


def test_event_window_longer_than_the_backbone_is_refused(
    tiny_oddball: Path, data_event_contract: InputContract
) -> None:
    spec = DataSpec(label_source="events", classes={"standard": 0, "target": 1},
                    event_tmin=-0.2, event_tmax=1.5)
    cohort = eligible_participants(read_participants(tiny_oddball, spec), spec)
    with pytest.raises(ValueError, match=r"data\.event_tmax.*1\.7 s long.*takes 1 s windows.*"
                       r"event_tmax <= 0\.8"):
        load_site_windows(tiny_oddball, cohort, data_event_contract, spec)


def test_named_reference_absent_is_refused(
    tmp_path: Path, good_edf: Path, contract: InputContract
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(good_edf, root / "good.edf")
    _write(_raw(names=STANDARD_1020_19), root / "noref.edf")
    _site(root, {"good.edf": "G1", "noref.edf": "B1"})
    spec = DataSpec(reference=["A1", "A2"])
    cohort = eligible_participants(read_participants(root, spec), spec)
    ws = load_site_windows(root, cohort, contract, spec, on_error="skip")
    assert re.match(r"reference channel\(s\) \['A1', 'A2'\] \(data\.reference\) are not in the "
                    r"recording", ws.report.refused["noref.edf"])
    assert ws.participant_ids == ["G1"]
    with pytest.raises(HarmonisationError, match=r"good\.edf: reference channel\(s\) \['Cz'\] "
                       r"are channels of the backbone's montage"):
        load_site_windows(root, cohort, contract, DataSpec(reference=["Cz"]))


# --------------------------------------------------------------------------- datasets
def test_dataset_level_problems(tmp_path: Path, data_spec: DataSpec) -> None:
    def table(text: str, name: str = "recordings.tsv") -> Path:
        root = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        root.mkdir()
        (root / name).write_text(text, encoding="utf-8")
        return root

    cases = [
        (table("participant_id\tdiagnosis\tconsent\n", "participants.tsv"),
         r"participants\.tsv lists no participants"),
        (table("file\tparticipant_id\na.edf\tP1\n"),
         r"recordings\.tsv lacks the column\(s\) \['path'\].*separated by tabs"),
        (table("path,subject\na.edf,P1\n", "recordings.csv"),
         r"recordings\.csv lacks the column\(s\) \['participant_id'\].*separated by commas"),
        (table("path\tparticipant_id\n"), r"recordings\.tsv lists no recordings"),
        (table("path\tparticipant_id\tdiagnosis\tconsent\na.edf\tP1\tnormal\tyes\n"
               "b.edf\tP1\tabnormal\tyes\n"),
         r"must be the same on all of their rows: 'P1' line 3: \['diagnosis'\] differ"),
        (table("path\tparticipant_id\n"
               "a.edf\tP1\n"),
         r"participants\.tsv not found, and recordings\.tsv lacks the column\(s\) "
         r"\['diagnosis', 'consent'\]"),
        (table("path\tparticipant_id\tline_freq\tdiagnosis\tconsent\n"
               "a.edf\tP1\tfifty\tnormal\tyes\na.edf\tP2\t50\tnormal\tyes\n"),
         r"line 2: line_freq 'fifty' is not a frequency in Hz; line 3 repeats the path 'a\.edf'"),
    ]
    for root, message in cases:
        with pytest.raises(BIDSDatasetError, match=message):
            read_participants(root, data_spec)


def test_events_mode_needs_no_label_column(tmp_path: Path) -> None:
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tconsent\nsub-01\tyes\nsub-02\tno\n", encoding="utf-8")
    spec = DataSpec(label_source="events", classes={"standard": 0, "target": 1})
    cohort = eligible_participants(read_participants(tmp_path, spec), spec)
    assert cohort.participant_ids == ("sub-01",) and cohort.labels == (-1,)
    with pytest.raises(BIDSDatasetError, match=r"lacks the column\(s\) \['diagnosis'\]"):
        read_participants(tmp_path, DataSpec())


def test_empty_and_unusable_datasets_are_reported(
    tmp_path: Path, data_consortium: dict[str, Path], contract: InputContract
) -> None:
    # A BIDS dataset whose participants have no recordings at all.
    root = tmp_path / "empty"
    root.mkdir()
    shutil.copy(data_consortium["hospital-a"] / "participants.tsv", root)
    report = check_site(root, DataSpec(), contract)
    assert not report.usable and "no usable window in any recording" in report.unusable_reasons
    assert all("no EEG recording" in p.reason for p in report.problems)
    # No participants.tsv: reported, not raised.
    report = check_site(tmp_path, DataSpec(), contract)
    assert not report.usable and "participants.tsv not found" in report.unusable_reasons[0]
    report = check_site(tmp_path / "nope", DataSpec(), contract)
    assert "is not a directory" in report.unusable_reasons[0]


def test_recordings_without_windows_say_why(
    tmp_path: Path, good_edf: Path, contract: InputContract
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    for k in range(2):
        shutil.copy(good_edf, root / f"good{k}.edf")
    _write(_raw(seconds=2.0), root / "short.edf")
    loud = _raw(seed=4)
    loud._data *= 1e3  # mV values stored as µV: every window is an artefact
    _write(loud, root / "loud.edf")
    _site(root, {"good0.edf": "G0", "good1.edf": "G1", "short.edf": "S1", "loud.edf": "L1"})
    report = check_site(root, DataSpec(), contract)
    reasons = {p.file: p.reason for p in report.problems}
    assert reasons["short.edf"] == "shorter than one window (2 s < 4 s)"
    assert re.match(r"every window was rejected \(0 flat, 2 extreme; median peak-to-peak .* µV\): "
                    r"amplitudes this far off usually mean wrong units", reasons["loud.edf"])
    status = {r.file: r.status for r in report.recordings}
    assert status == {"good0.edf": "ok", "good1.edf": "ok", "short.edf": "no_windows",
                      "loud.edf": "no_windows"}
    without = {p.participant_id: p.without_windows_reason for p in report.participants}
    assert without["S1"] == without["L1"] == "every window was rejected or refused"
