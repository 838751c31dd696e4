"""Every EEG format, as BIDS and as loose files; files written by other software (pyedflib);
multi-session BIDS; re-referencing, thresholds and unit scaling from the spec."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import mne
import mne_bids
import numpy as np
import pytest

import pyedflib
from fedneuro.data.bids import eligible_participants, read_participants
from fedneuro.data.check import check_site
from fedneuro.data.events import events_from_annotations
from fedneuro.data.harmonise import harmonise_recording, load_site_windows
from fedneuro.data.layout import SiteIndex
from fedneuro.data.readers import read_eeg_file
from fedneuro.data.spec import DataSpec, InputContract
from fedneuro.data.synth import DEFAULT_PROFILES, STANDARD_1020_19, synthesize_site

pytestmark = pytest.mark.filterwarnings("error")

PYEDFLIB = Path(pyedflib.__file__).parent
TINY = dict(n_participants=4, duration_s=10.0, seed=5)
LAYOUTS = [("bids", f) for f in ("EDF", "BDF", "BrainVision", "EEGLAB")] + [
    ("loose", f) for f in ("EDF", "BDF", "BrainVision", "EEGLAB", "FIF")
]


def _load(root: Path, contract: InputContract, spec: DataSpec, **kw):  # type: ignore[no-untyped-def]
    cohort = eligible_participants(read_participants(root, spec), spec)
    return load_site_windows(root, cohort, contract, spec, **kw)


@pytest.fixture(scope="module")
def reference_windows(tmp_path_factory: pytest.TempPathFactory, data_contract: InputContract):  # type: ignore[no-untyped-def]
    root = synthesize_site(tmp_path_factory.mktemp("ref"), DEFAULT_PROFILES[1], **TINY)
    return _load(root, data_contract, DataSpec())


@pytest.mark.parametrize(("layout", "fmt"), LAYOUTS, ids=[f"{a}-{b}" for a, b in LAYOUTS])
def test_every_format_and_layout_gives_the_same_windows(
    layout: str, fmt: str, tmp_path: Path, data_contract: InputContract, reference_windows
) -> None:  # type: ignore[no-untyped-def]
    root = synthesize_site(tmp_path, DEFAULT_PROFILES[1], format=fmt, layout=layout, **TINY)
    assert SiteIndex(root).layout == layout
    ws = _load(root, data_contract, DataSpec())
    ref = reference_windows
    assert ws.participant_ids == ref.participant_ids and ws.X.shape == ref.X.shape
    assert not ws.report.refused
    rep = ws.report.recordings[0]
    assert rep.interpolated == ("Fz", "Pz") and rep.notched == (50.0,)  # line_freq known
    # Same signal whatever the container (EDF/BDF quantise; the rest store floats).
    corr = np.corrcoef(ws.X.ravel(), ref.X.ravel())[0, 1]
    assert corr > 0.999, corr
    if layout == "bids":
        for name in ("dataset_description.json", "participants.tsv", "participants.json"):
            assert (root / name).is_file()
        eeg_dir = root / "sub-001" / "eeg"
        assert (eeg_dir / "sub-001_task-rest_channels.tsv").is_file()
        sidecar = json.loads((eeg_dir / "sub-001_task-rest_eeg.json").read_text())
        assert sidecar["PowerLineFrequency"] == 50
    else:
        table = (root / "recordings.tsv").read_text().splitlines()
        assert table[0].split("\t") == ["path", "participant_id", "task", "line_freq"]


def test_fif_is_loose_only_and_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FIF is for MEG. Use layout='loose'"):
        synthesize_site(tmp_path, DEFAULT_PROFILES[0], format="fif", **TINY)
    with pytest.raises(ValueError, match=r"'format'.*got 'gdf' instead"):
        synthesize_site(tmp_path, DEFAULT_PROFILES[0], format="gdf", **TINY)
    with pytest.raises(ValueError, match=r"'task'.*got 'sleep' instead"):
        synthesize_site(tmp_path, DEFAULT_PROFILES[0], task="sleep", **TINY)
    assert not list(tmp_path.iterdir())


def test_loose_files_get_channel_types_and_line_freq_from_the_table(
    tmp_path: Path, data_contract: InputContract
) -> None:
    root = synthesize_site(tmp_path, DEFAULT_PROFILES[0], format="EDF", layout="loose", **TINY)
    raw = read_eeg_file(root / "sub-001" / "sub-001_task-rest_eeg.edf")
    assert raw.get_channel_types(picks=["ECG"]) == ["ecg"] and raw.info["line_freq"] is None
    ws = _load(root, data_contract, DataSpec())
    assert ws.report.recordings[0].notched == (60.0, 120.0)
    assert "ECG" in ws.report.recordings[0].dropped
    # Without the line_freq column the notch is skipped, and the report says so.
    table = root / "recordings.tsv"
    rows = [ln.split("\t")[:3] for ln in table.read_text().splitlines()]
    table.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    ws = _load(root, data_contract, DataSpec())
    rep = ws.report.recordings[0]
    assert rep.notched == () and any("notch skipped" in n for n in rep.notes)


# --------------------------------------------------------------------------- other software
def test_pyedflib_files_read_and_harmonise(tmp_path: Path) -> None:
    gen = read_eeg_file(PYEDFLIB / "data" / "test_generator.edf")
    assert (gen.info["sfreq"], len(gen.ch_names), gen.n_times / 200.0) == (200.0, 11, 600.0)
    assert [e.value for e in events_from_annotations(gen)] == ["Recording starts", "Recording ends"]
    # Its sine channels through the whole pipeline, on a contract of their own names.
    contract = InputContract(channels=("sine 8 Hz", "sine 15 Hz"), sfreq=100.0,
                             input_window_seconds=2.0)
    spec = DataSpec(reference="none", max_missing_channels=0, normalisation="none",
                    h_freq=40.0)
    win, rep = harmonise_recording(gen, contract, spec)
    assert win.shape == (300, 2, 200) and rep.source_sfreq == 200.0
    f = np.fft.rfftfreq(200, 1 / 100.0)
    power = (np.abs(np.fft.rfft(win, axis=-1)) ** 2).mean(0)
    assert f[power[0].argmax()] == 8.0 and f[power[1].argmax()] == 15.0
    # Sub-second EDF+ annotations keep their onsets.
    sub = read_eeg_file(PYEDFLIB / "tests" / "data" / "test_subsecond.edf")
    onsets = [e.onset for e in events_from_annotations(sub)]
    assert onsets[0] == pytest.approx(1.951172, abs=1e-6)
    for name, sfreq in (("test_generator.bdf", 1000.0),
                        ("test_generator_datarec_generator_0_5.bdf", 2000.0),
                        ("test_utf8.edf", 128.0), ("test_legacy.edf", 200.0)):
        assert read_eeg_file(PYEDFLIB / "tests" / "data" / name).info["sfreq"] == sfreq


def test_check_reports_foreign_files_against_a_study(tmp_path: Path, data_contract: InputContract) -> None:
    root = tmp_path / "foreign"
    root.mkdir()
    rows = []
    for i, src in enumerate([PYEDFLIB / "tests" / "data" / "test_subsecond.edf",
                             PYEDFLIB / "tests" / "data" / "test_generator.bdf"]):
        shutil.copy(src, root / src.name)
        rows.append(f"{src.name}\tP{i}\t{('normal', 'abnormal')[i]}\tyes\n")
    (root / "recordings.tsv").write_text(
        "path\tparticipant_id\tdiagnosis\tconsent\n" + "".join(rows))
    report = check_site(root, DataSpec(), data_contract)
    assert not report.usable
    reasons = {p.file: p.reason for p in report.problems}
    assert "18 of the 19 montage channels are missing" in reasons["test_subsecond.edf"]
    assert "19 of the 19 montage channels are missing" in reasons["test_generator.bdf"]


# --------------------------------------------------------------------------- BIDS entities
def test_bids_sessions_runs_and_tasks(tmp_path: Path, data_contract: InputContract) -> None:
    rng = np.random.default_rng(0)
    info = mne.create_info(list(STANDARD_1020_19), 200.0, "eeg")
    root = tmp_path / "bids"
    entities = [("01", "1", "rest", 1), ("01", "1", "rest", 2), ("01", "2", "rest", 1),
                ("01", "2", "memory", 1), ("02", "1", "rest", 1)]
    for sub, ses, task, run in entities:
        raw = mne.io.RawArray(10e-6 * rng.standard_normal((19, 1600)), info, verbose=False)
        raw.info["line_freq"] = 50.0
        bp = mne_bids.BIDSPath(subject=sub, session=ses, task=task, run=run, datatype="eeg",
                               root=root)
        with warnings.catch_warnings():  # mne-bids asks non-rest tasks for events
            warnings.filterwarnings("ignore", message="No events found or provided")
            mne_bids.write_raw_bids(raw, bp, format="EDF", allow_preload=True, verbose=False)
    (root / "participants.tsv").write_text(
        "participant_id\tdiagnosis\tconsent\nsub-01\tnormal\tyes\nsub-02\tabnormal\tyes\n")
    ws = _load(root, data_contract, DataSpec(task="rest"))
    files = [r.file for r in ws.report.recordings]
    assert files == [
        "sub-01/ses-1/eeg/sub-01_ses-1_task-rest_run-1_eeg.edf",
        "sub-01/ses-1/eeg/sub-01_ses-1_task-rest_run-2_eeg.edf",
        "sub-01/ses-2/eeg/sub-01_ses-2_task-rest_run-1_eeg.edf",
        "sub-02/ses-1/eeg/sub-02_ses-1_task-rest_run-1_eeg.edf",
    ]
    assert len(ws) == 8 and ws.participant_ids == ["sub-01", "sub-02"]
    assert len(_load(root, data_contract, DataSpec(task=None)).report.recordings) == 5


# --------------------------------------------------------------------------- spec options
def _common_mode_raw(seed: int = 0) -> mne.io.RawArray:
    rng = np.random.default_rng(seed)
    n = 200 * 8
    common = 30e-6 * np.sin(2 * np.pi * 6 * np.arange(n) / 200.0)
    names = [*STANDARD_1020_19, "A1", "A2"]
    data = 5e-6 * rng.standard_normal((len(names), n)) + common
    data[-2:] = common + 0.5e-6 * rng.standard_normal((2, n))  # the ears see only the common
    raw = mne.io.RawArray(data, mne.create_info(names, 200.0, "eeg"), verbose=False)
    raw.info["line_freq"] = 50.0
    return raw


def test_reference_options(data_contract: InputContract) -> None:
    raw = _common_mode_raw()
    out = {}
    for ref in ("none", "average", ["A1", "A2"]):
        win, rep = harmonise_recording(raw, data_contract, DataSpec(reference=ref))
        out[str(ref)] = win
        assert rep.reference == (ref if isinstance(ref, str) else "A1+A2")
        assert rep.dropped == (() if isinstance(ref, list) else ("A1", "A2"))
    def mean_corr(x):  # type: ignore[no-untyped-def]
        c = np.corrcoef(x.transpose(1, 0, 2).reshape(19, -1))
        return np.abs(c[~np.eye(19, dtype=bool)]).mean()
    assert mean_corr(out["none"]) > 0.8  # the common signal dominates
    assert mean_corr(out["['A1', 'A2']"]) < 0.2  # linked ears remove it
    assert np.abs(out["average"].mean(axis=1)).max() < 1e-4  # average reference: zero mean


def test_thresholds_and_scaling_are_spec_fields(data_contract: InputContract) -> None:
    raw = _common_mode_raw()
    _, rep = harmonise_recording(raw, data_contract, DataSpec())
    assert rep.n_windows == 2 and rep.n_rejected == 0
    _, strict = harmonise_recording(raw, data_contract, DataSpec(extreme_ptp_uv=5.0))
    assert strict.n_windows == 0 and strict.n_rejected_extreme == 2
    _, flat = harmonise_recording(raw, data_contract, DataSpec(flat_ptp_uv=50.0,
                                                               extreme_ptp_uv=None))
    assert flat.n_rejected_flat == 2
    w100, _ = harmonise_recording(raw, data_contract, DataSpec(normalisation="none"))
    w10, _ = harmonise_recording(raw, data_contract, DataSpec(normalisation="none", scale_uv=10))
    np.testing.assert_allclose(w10, 10 * w100, rtol=1e-5)
    with pytest.raises(ValueError, match=r"flat_ptp_uv \(600.0\) must be below extreme_ptp_uv"):
        DataSpec(flat_ptp_uv=600.0)
    with pytest.raises(ValueError, match="reference channels must be listed once"):
        DataSpec(reference=["A1", "A1"])


def test_wrong_units_are_suggested(tmp_path: Path, data_contract: InputContract) -> None:
    raw = _common_mode_raw()
    raw._data *= 1e6  # µV numbers stored as volts: the classic unit slip
    path = tmp_path / "volts_eeg.fif"
    raw.save(path, verbose=False)
    _, rep = harmonise_recording(read_eeg_file(path), data_contract, DataSpec())
    assert rep.n_windows == 0 and rep.n_rejected_extreme == 2
    assert "wrong units in the file (V vs µV)" in rep.notes[-1]
