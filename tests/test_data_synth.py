"""Synthetic sites: real BIDS files that differ per hospital and carry the class signal."""

from __future__ import annotations

import csv
from pathlib import Path

import mne
import numpy as np
import pytest
from scipy.signal import welch

from fedneuro.data import synth
from fedneuro.data.channels import normalise_channel_name
from fedneuro.data.synth import (
    DEFAULT_PROFILES,
    STANDARD_1020_19,
    SiteProfile,
    synthesize_consortium,
    synthesize_site,
)

pytestmark = pytest.mark.filterwarnings("error")

TINY = dict(n_participants=4, duration_s=10.0)


def _participants(root: Path) -> list[dict[str, str]]:
    with (root / "participants.tsv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _edf(root: Path, pid: str) -> Path:
    return root / pid / "eeg" / f"{pid}_task-rest_eeg.edf"


def _read(root: Path, pid: str) -> mne.io.BaseRaw:
    return mne.io.read_raw_edf(_edf(root, pid), preload=True, verbose=False)


def test_bids_layout_and_participants(data_consortium: dict[str, Path]) -> None:
    assert list(data_consortium) == ["hospital-a", "hospital-b", "hospital-c"]
    for root in data_consortium.values():
        assert (root / "dataset_description.json").is_file()
        rows = _participants(root)
        assert len(rows) == 12
        assert {"participant_id", "age", "sex", "diagnosis", "consent"} <= set(rows[0])
        diagnoses = [r["diagnosis"] for r in rows]
        assert diagnoses.count("normal") == diagnoses.count("abnormal") == 6
        consent = [r["consent"] for r in rows]
        assert 1 <= sum(c != "yes" for c in consent) <= 3
        assert set(consent) <= {"yes", "no", "withdrawn"}
        assert all(18 <= int(r["age"]) <= 85 and r["sex"] in {"M", "F"} for r in rows)
        # Non-consenting participants still have files: the gate, not the data, excludes them.
        for r in rows:
            assert _edf(root, r["participant_id"]).is_file()
        assert not list(root.parent.glob(".*partial*"))


def test_sites_differ_as_hospitals_do(data_consortium: dict[str, Path]) -> None:
    raws = {name: _read(root, "sub-001") for name, root in data_consortium.items()}
    a, b, c = raws["hospital-a"], raws["hospital-b"], raws["hospital-c"]
    assert {a.info["sfreq"], b.info["sfreq"], c.info["sfreq"]} == {256.0, 200.0, 500.0}
    assert "EEG Fp1-REF" in a.ch_names and "EEG T3-REF" in a.ch_names  # old names
    assert "Fp1" in b.ch_names and "Fz" not in b.ch_names and "Pz" not in b.ch_names
    assert "FP1" in c.ch_names and "T7" in c.ch_names
    bids_raw_types = (data_consortium["hospital-a"] / "sub-001" / "eeg").glob("*channels.tsv")
    assert "ECG\tECG" in next(bids_raw_types).read_text()
    # Amplitude: site gains 1.4 vs 0.7 show up in the robust scale of the EEG channels.
    def scale(raw: mne.io.BaseRaw) -> float:
        eeg = raw.get_data(picks=[n for n in raw.ch_names if n != "ECG"])
        eeg = eeg - np.median(eeg, axis=1, keepdims=True)
        return float(np.median(np.median(np.abs(eeg), axis=1)))

    assert scale(a) / scale(b) > 1.5
    for raw in raws.values():
        uv = np.abs(raw.get_data(picks="eeg")) * 1e6
        assert 5 < np.median(uv) < 60  # tens of µV, in volts as MNE expects


def test_deterministic_per_seed(tmp_path: Path) -> None:
    profile = DEFAULT_PROFILES[2]
    r1 = synthesize_site(tmp_path / "one", profile, seed=3, **TINY)
    r2 = synthesize_site(tmp_path / "two", profile, seed=3, **TINY)
    r3 = synthesize_site(tmp_path / "three", profile, seed=4, **TINY)
    assert r1 == tmp_path / "one" / profile.name
    assert (r1 / "participants.tsv").read_bytes() == (r2 / "participants.tsv").read_bytes()
    for pid in ("sub-001", "sub-004"):
        np.testing.assert_array_equal(_read(r1, pid).get_data(), _read(r2, pid).get_data())
        assert not np.allclose(_read(r1, pid).get_data(), _read(r3, pid).get_data())


def test_abnormal_has_focal_slowing_and_slower_alpha(data_consortium: dict[str, Path]) -> None:
    peaks: dict[str, list[float]] = {"normal": [], "abnormal": []}
    asym: dict[str, list[float]] = {"normal": [], "abnormal": []}
    for root in data_consortium.values():
        for row in _participants(root):
            raw = _read(root, row["participant_id"])
            names = [normalise_channel_name(c) for c in raw.ch_names]
            f, p = welch(raw.get_data(), raw.info["sfreq"], nperseg=int(4 * raw.info["sfreq"]))
            band = (f >= 6) & (f <= 13)
            peaks[row["diagnosis"]].append(f[band][np.argmax(p[names.index("O1"), band])])
            delta = (f >= 1) & (f < 4)

            def dpow(chs: tuple[str, ...]) -> float:
                return float(sum(p[names.index(ch), delta].sum() for ch in chs))

            asym[row["diagnosis"]].append(
                abs(np.log(dpow(("F7", "T7", "P7")) / dpow(("F8", "T8", "P8"))))
            )
    # Posterior rhythm ~10 Hz in normals, ~8 Hz in abnormals.
    assert 9.25 <= np.median(peaks["normal"]) <= 10.75
    assert 7.25 <= np.median(peaks["abnormal"]) <= 8.75
    # Focal (one-sided) delta: strong left/right asymmetry only in abnormals.
    assert np.median(asym["abnormal"]) > 5 * np.median(asym["normal"])


def test_line_noise_at_site_frequency(data_consortium: dict[str, Path]) -> None:
    for profile in DEFAULT_PROFILES:
        raw = _read(data_consortium[profile.name], "sub-002")
        f, p = welch(raw.get_data(picks="eeg"), raw.info["sfreq"], nperseg=int(raw.info["sfreq"]))
        at = lambda hz: p[:, np.argmin(np.abs(f - hz))].mean()  # noqa: E731
        other = 110.0 - profile.line_freq  # 60 <-> 50
        assert at(profile.line_freq) > 20 * at(other)


def test_invalid_arguments_are_named(tmp_path: Path) -> None:
    p = DEFAULT_PROFILES[0]
    with pytest.raises(ValueError, match="'n_participants'.*got 3 instead"):
        synthesize_site(tmp_path, p, n_participants=3, duration_s=20.0, seed=0)
    with pytest.raises(ValueError, match="'duration_s'.*got 2.0 instead"):
        synthesize_site(tmp_path, p, n_participants=4, duration_s=2.0, seed=0)
    with pytest.raises(ValueError, match="'n_sites'.*got 0 instead"):
        synthesize_consortium(tmp_path, n_sites=0)
    with pytest.raises(ValueError, match="'missing_channels'.*'Xx9'"):
        SiteProfile("h", 256.0, "plain", False, ("Xx9",), (), 1.0, 1.0, 50.0)
    with pytest.raises(ValueError, match="'line_freq' must be 50 or 60, got 55"):
        SiteProfile("h", 256.0, "plain", False, (), (), 1.0, 1.0, 55.0)
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_no_half_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = DEFAULT_PROFILES[1]
    root = synthesize_site(tmp_path, profile, seed=1, **TINY)
    before = (root / "participants.tsv").read_bytes()
    import mne_bids

    calls = {"n": 0}
    real = mne_bids.write_raw_bids

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(mne_bids, "write_raw_bids", flaky)
    with pytest.raises(OSError, match="disk full"):
        synthesize_site(tmp_path, profile, seed=2, **TINY)
    # The previous dataset is untouched and no partial directory is left behind.
    assert (root / "participants.tsv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [profile.name]


def test_consortium_cycles_profiles_with_unique_names(tmp_path: Path) -> None:
    sites = synthesize_consortium(tmp_path, n_sites=4, participants_per_site=4, duration_s=10.0)
    names = [n for n, _ in sites]
    assert names == ["hospital-a", "hospital-b", "hospital-c", "hospital-a-2"]
    extra = synth._site_profiles(4, DEFAULT_PROFILES)[3]
    assert extra.gain != DEFAULT_PROFILES[0].gain and extra.sfreq == DEFAULT_PROFILES[0].sfreq
    # Sites get different seeds: same profile family, different signals.
    a1, a2 = _read(sites[0][1], "sub-001"), _read(sites[3][1], "sub-001")
    assert a1.ch_names == a2.ch_names
    assert not np.allclose(a1.get_data(), a2.get_data())


def test_default_profiles_cover_hospital_differences() -> None:
    assert {p.sfreq for p in DEFAULT_PROFILES} == {200.0, 256.0, 500.0}
    assert {p.naming for p in DEFAULT_PROFILES} == {"edf-ref", "plain", "upper"}
    assert any(p.old_1020_names for p in DEFAULT_PROFILES)
    assert any(len(p.missing_channels) == 2 for p in DEFAULT_PROFILES)
    assert all(p.gain != 1.0 for p in DEFAULT_PROFILES)
    assert {p.line_freq for p in DEFAULT_PROFILES} == {50.0, 60.0}
    assert len(STANDARD_1020_19) == 19


def test_many_sites_keep_gain_and_noise_bounded() -> None:
    from fedneuro.data.synth import DEFAULT_PROFILES, _site_profiles

    profiles = _site_profiles(60, DEFAULT_PROFILES)
    assert len({p.name for p in profiles}) == 60
    base = {p.name: p for p in DEFAULT_PROFILES}
    for p in profiles:
        origin = base[p.name.rsplit("-", 1)[0]] if p.name not in base else p
        assert 0.79 <= p.gain / origin.gain <= 1.26 and 1.0 <= p.noise_uv / origin.noise_uv <= 2.0
