"""Event-locked windows: events.tsv and annotations, windows under the backbone's contract,
class-dependent evoked responses that a simple classifier learns on held-out participants."""

from __future__ import annotations

import shutil
from pathlib import Path

import mne
import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import balanced_accuracy_score

from fedneuro.data.bids import eligible_participants, read_participants
from fedneuro.data.events import Event, class_of, read_events_tsv
from fedneuro.data.harmonise import harmonise_event_windows, load_site_windows
from fedneuro.data.spec import DataSpec, InputContract
from fedneuro.data.splits import split_window_set
from fedneuro.data.synth import DEFAULT_PROFILES, STANDARD_1020_19, synthesize_site

pytestmark = pytest.mark.filterwarnings("error")


def _load(root: Path, contract: InputContract, spec: DataSpec, **kw):  # type: ignore[no-untyped-def]
    cohort = eligible_participants(read_participants(root, spec), spec)
    return load_site_windows(root, cohort, contract, spec, **kw)


@pytest.fixture(scope="module")
def oddball_windows(data_oddball_site: Path, data_event_contract: InputContract,
                    data_event_spec: DataSpec):  # type: ignore[no-untyped-def]
    return _load(data_oddball_site, data_event_contract, data_event_spec)


def test_read_events_tsv(tmp_path: Path) -> None:
    tsv = tmp_path / "events.tsv"
    tsv.write_text("onset\tduration\ttrial_type\tvalue\n1.5\t0\tstandard\t1\n"
                   "2.25\tn/a\ttarget\t2\n3.0\t0.5\tn/a\t9\n")
    assert read_events_tsv(tsv, "trial_type") == [
        Event(1.5, 0.0, "standard"), Event(2.25, 0.0, "target"), Event(3.0, 0.5, None)]
    assert [e.value for e in read_events_tsv(tsv, "value")] == ["1", "2", "9"]
    assert [e.value for e in read_events_tsv(tsv, None)] == [None, None, None]


def test_class_of_matches_exactly_or_after_a_slash() -> None:
    classes = {"standard": 0, "target": 1, "S  1": 0}
    assert class_of("target", classes) == "target"
    assert class_of("Comment/target", classes) == "target"  # BrainVision markers via MNE
    assert class_of("Stimulus/S  1", classes) == "S  1"
    assert class_of("novel", classes) is None and class_of(None, classes) is None


def test_event_windows_are_locked_labelled_and_fit_the_contract(
    oddball_windows, data_oddball_site: Path, data_event_contract: InputContract
) -> None:  # type: ignore[no-untyped-def]
    ws = oddball_windows
    assert ws.X.shape[1:] == (19, data_event_contract.n_times) == (19, 200)
    assert set(np.unique(ws.y)) == {0, 1} and ws.mixed_labels
    assert 0.15 < ws.y.mean() < 0.45  # about 30% targets
    rep = ws.report.recordings[0]
    tsv = data_oddball_site / rep.file.replace("_eeg.vhdr", "_events.tsv")
    n_events = len(read_events_tsv(tsv, "trial_type"))
    assert rep.n_events == n_events and rep.n_events_outside == 0
    assert rep.n_windows + rep.n_rejected == n_events
    # Per participant: the windows they contributed, of both classes.
    for i, _pid in enumerate(ws.participant_ids):
        assert set(ws.y[ws.participant == i].tolist()) == {0, 1}


def test_p300_is_learnable_on_held_out_participants(oddball_windows) -> None:  # type: ignore[no-untyped-def]
    train, test = split_window_set(oddball_windows, test_fraction=0.3, seed=0)
    assert not set(train.participant_ids) & set(test.participant_ids)
    assert set(train.y.tolist()) == set(test.y.tolist()) == {0, 1}

    def features(X: np.ndarray) -> np.ndarray:
        # Mean amplitude of every channel in 100-ms bins from 0 to 600 ms (tmin = -0.2 s).
        return X[:, :, 40:160].reshape(len(X), X.shape[1], 6, 20).mean(-1).reshape(len(X), -1)

    clf = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=[0.5, 0.5])
    clf.fit(features(train.X), train.y)
    assert balanced_accuracy_score(test.y, clf.predict(features(test.X))) >= 0.7
    # The evoked difference itself: targets are more positive at Pz around 350 ms.
    pz = STANDARD_1020_19.index("Pz")
    ws = oddball_windows
    diff = ws.X[ws.y == 1, pz].mean(0) - ws.X[ws.y == 0, pz].mean(0)
    assert 0.25 <= (np.argmax(diff) - 40) / 200.0 <= 0.45


def test_event_tmax_zero_fills_and_backbone_window_counts_edges(
    data_oddball_site: Path, data_event_spec: DataSpec, data_contract: InputContract,
    data_event_contract: InputContract,
) -> None:
    short = data_event_spec.model_copy(update={"event_tmin": -0.1, "event_tmax": 0.5})
    ws = _load(data_oddball_site, data_event_contract, short)
    assert np.all(ws.X[..., 120:] == 0) and np.abs(ws.X[..., :120]).min(axis=-1).max() > 0
    # The backbone's own 4-s windows: events too close to the end are counted, not cut.
    ws4 = _load(data_oddball_site, data_contract, data_event_spec)
    assert ws4.X.shape[1:] == (19, 800)
    rep = ws4.report.recordings[0]
    assert rep.n_events_outside >= 1
    assert rep.n_windows + rep.n_rejected + rep.n_events_outside == rep.n_events


def test_loose_events_from_annotations_and_from_an_events_column(
    tmp_path: Path, data_event_spec: DataSpec, data_event_contract: InputContract
) -> None:
    root = synthesize_site(tmp_path, DEFAULT_PROFILES[2], n_participants=4, duration_s=12.0,
                           seed=2, format="BrainVision", layout="loose", task="oddball")
    ws = _load(root, data_event_contract, data_event_spec)  # markers read as "Comment/<value>"
    assert len(ws) > 10 and set(ws.y.tolist()) == {0, 1}
    # An events file named in the table overrides the file's annotations.
    table = root / "recordings.tsv"
    lines = table.read_text().splitlines()
    (root / "only_targets.tsv").write_text("onset\tduration\ttrial_type\n2.0\t0\ttarget\n"
                                           "5.0\t0\ttarget\n")
    out = [lines[0] + "\tevents"] + [ln + "\tonly_targets.tsv" for ln in lines[1:]]
    table.write_text("\n".join(out) + "\n")
    ws = _load(root, data_event_contract, data_event_spec)
    assert set(ws.y.tolist()) == {1}
    assert all(r.n_events == 2 for r in ws.report.recordings)


def test_unmapped_event_values_are_counted(data_event_contract: InputContract) -> None:
    rng = np.random.default_rng(0)
    raw = mne.io.RawArray(10e-6 * rng.standard_normal((19, 2000)),
                          mne.create_info(list(STANDARD_1020_19), 200.0, "eeg"), verbose=False)
    raw.info["line_freq"] = 50.0
    events = [Event(1.0, 0, "target"), Event(2.0, 0, "novel"), Event(3.0, 0, "novel"),
              Event(4.0, 0, None), Event(9.5, 0, "standard")]
    spec = DataSpec(label_source="events", classes={"standard": 0, "target": 1})
    X, y, rep = harmonise_event_windows(raw, events, data_event_contract, spec)
    assert rep.events_ignored == (("n/a", 1), ("novel", 2))
    assert rep.n_events == 2 and rep.n_events_outside == 1 and y.tolist() == [1]
    assert X.shape == (1, 19, 200)


def test_participant_mode_is_unchanged_on_an_oddball_site(
    tmp_path: Path, data_oddball_site: Path, data_contract: InputContract
) -> None:
    root = tmp_path / "site"
    shutil.copytree(data_oddball_site, root)
    ws = _load(root, data_contract, DataSpec(task="oddball"))
    assert not ws.mixed_labels and len(ws) > 0
