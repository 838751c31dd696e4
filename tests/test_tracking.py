"""The coordinator's TensorBoard tracking: tags and values read back with TensorBoard's own
reader, resumed studies append without a second point per round, errors never fail a round."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedneuro.federation.rounds import RoundReport, SiteRoundReport
from fedneuro.federation.tracking import TENSORBOARD_DIR, RoundTracker, read_scalars, round_scalars


def _report(round_: int, *, failures: list[str] | None = None) -> RoundReport:
    sites = {
        "hospital-a": SiteRoundReport(site="hospital-a", num_examples=120, privacy_units=30, epsilon=0.5 * round_,
                                      delta=1e-5, epsilon_accountant="prv", dp_steps=4 * round_, train_loss=1.0 / round_,
                                      bytes_uploaded=1000, balanced_accuracy=0.5 + 0.1 * round_, test_windows=40,
                                      test_participants=6),
        "hospital-b": SiteRoundReport(site="hospital-b", num_examples=80, privacy_units=20, epsilon=0.7 * round_,
                                      delta=2e-5, epsilon_accountant="prv", dp_steps=3 * round_, train_loss=2.0 / round_,
                                      bytes_uploaded=1000, balanced_accuracy=0.4 + 0.1 * round_, test_windows=30,
                                      test_participants=5),
        # Failed this round: no training, no evaluation (NaN accuracy).
        "hospital-c": SiteRoundReport(site="hospital-c"),
    }
    return RoundReport(round=round_, sites=sites, balanced_accuracy=0.45 + 0.1 * round_,
                       participant_balanced_accuracy=0.5 + 0.1 * round_, failures=failures or [],
                       wall_time_s=10.0 + round_)


def _steps(scalars: dict[str, list[tuple[int, float]]], tag: str) -> list[int]:
    return [step for step, _ in scalars[tag]]


def test_round_scalars_tags_and_values() -> None:
    scalars = round_scalars(_report(2, failures=["hospital-c: train failed: budget"]))
    assert scalars["accuracy/pooled"] == pytest.approx(0.65)
    assert scalars["accuracy/pooled_participants"] == pytest.approx(0.7)
    assert scalars["accuracy/hospital-a"] == pytest.approx(0.7)
    assert scalars["epsilon/hospital-b"] == pytest.approx(1.4)
    assert scalars["delta/hospital-a"] == pytest.approx(1e-5)
    assert scalars["dp_steps/hospital-a"] == 8
    assert scalars["train_loss/hospital-b"] == pytest.approx(1.0)
    assert scalars["bytes_uploaded/hospital-a"] == 1000 and scalars["bytes_uploaded/total"] == 2000
    assert scalars["round/wall_time_s"] == pytest.approx(12.0)
    assert scalars["round/failures"] == 1 and scalars["round/contributing_sites"] == 2
    # A site that neither trained nor evaluated: no NaN accuracy, no ε of a round it sat out.
    assert "accuracy/hospital-c" not in scalars and "epsilon/hospital-c" not in scalars
    assert scalars["bytes_uploaded/hospital-c"] == 0
    assert all(math.isfinite(v) for v in scalars.values())


def test_tracker_writes_event_files_read_back_by_tensorboard(tmp_path: Path) -> None:
    with RoundTracker(tmp_path) as tracker:
        for r in (1, 2, 3):
            assert tracker.log_round(_report(r, failures=["hospital-c: train failed: x"] if r == 2 else []))
        # Flushed after every round: readable while the study runs.
        scalars = read_scalars(tmp_path / TENSORBOARD_DIR)
    assert {"accuracy/pooled", "accuracy/hospital-a", "accuracy/hospital-b", "epsilon/hospital-a",
            "epsilon/hospital-b", "delta/hospital-a", "dp_steps/hospital-b", "train_loss/hospital-a",
            "bytes_uploaded/hospital-a", "bytes_uploaded/total", "round/wall_time_s", "round/failures"} <= set(scalars)
    assert _steps(scalars, "accuracy/pooled") == [1, 2, 3]
    assert [v for _, v in scalars["accuracy/pooled"]] == pytest.approx([0.55, 0.65, 0.75])
    assert [v for _, v in scalars["epsilon/hospital-b"]] == pytest.approx([0.7, 1.4, 2.1])
    assert [v for _, v in scalars["round/failures"]] == [0.0, 1.0, 0.0]
    assert [v for _, v in scalars["dp_steps/hospital-a"]] == [4.0, 8.0, 12.0]
    assert "accuracy/hospital-c" not in scalars


def test_resumed_study_appends_without_duplicate_steps(tmp_path: Path) -> None:
    # First run: rounds 1-3 written, but only rounds 1-2 were checkpointed before it died.
    first = RoundTracker(tmp_path)
    for r in (1, 2, 3):
        first.log_round(_report(r))
    first.close()
    # The resumed run redoes round 3 (another value) and goes on to round 4.
    second = RoundTracker(tmp_path)
    redone = _report(3)
    redone.balanced_accuracy = 0.9
    second.log_round(redone)
    second.log_round(_report(4))
    second.log_round(_report(4))  # a second call for the same round writes nothing
    second.close()
    assert len(list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2
    scalars = read_scalars(tmp_path / TENSORBOARD_DIR)
    for tag in ("accuracy/pooled", "epsilon/hospital-a", "round/wall_time_s"):
        assert _steps(scalars, tag) == [1, 2, 3, 4], tag
    assert [v for _, v in scalars["accuracy/pooled"]] == pytest.approx([0.55, 0.65, 0.9, 0.85])


def test_tracking_error_never_fails_the_round(tmp_path: Path) -> None:
    blocker = tmp_path / TENSORBOARD_DIR
    blocker.write_text("a file where the folder should be")
    tracker = RoundTracker(tmp_path)
    assert tracker.log_round(_report(1)) is False
    assert tracker.log_round(_report(2)) is False  # stays off, no retry per round
    tracker.close()
