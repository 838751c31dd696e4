"""The coordinator's round metrics as TensorBoard event files (``<study>/tensorboard/``).

One scalar per metric and round (``global_step`` = round): ``accuracy/pooled``,
``accuracy/pooled_participants``, ``accuracy/<site>``, ``epsilon/<site>``, ``delta/<site>``,
``dp_steps/<site>``, ``train_loss/<site>``, ``bytes_uploaded/<site>``, ``bytes_uploaded/total``,
``round/wall_time_s``, ``round/failures``, ``round/contributing_sites``; the failures' text
under ``failures``. View with ``tensorboard --logdir coordinator-state/studies``.

A resumed study appends a new event file that starts with a purge at its first round, so
TensorBoard drops any point an interrupted run wrote for a round that is being redone: one
point per tag and round. Monitoring never fails a study: a writer error is logged once and
tracking stops.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedneuro.federation.rounds import RoundReport

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"


def round_scalars(report: RoundReport) -> dict[str, float]:
    """The scalars of one round, by tag (non-finite values, e.g. a site that sent no
    evaluation, are left out rather than plotted as NaN)."""
    scalars: dict[str, float] = {
        "accuracy/pooled": report.balanced_accuracy,
        "accuracy/pooled_participants": report.participant_balanced_accuracy,
        "round/wall_time_s": report.wall_time_s,
        "round/failures": float(len(report.failures)),
        "round/contributing_sites": float(sum(1 for s in report.sites.values() if s.num_examples)),
        "bytes_uploaded/total": float(sum(s.bytes_uploaded for s in report.sites.values())),
    }
    for name, site in sorted(report.sites.items()):
        scalars[f"accuracy/{name}"] = site.balanced_accuracy
        scalars[f"bytes_uploaded/{name}"] = float(site.bytes_uploaded)
        if site.num_examples:  # trained this round: its privacy spend and loss are meaningful
            scalars[f"epsilon/{name}"] = site.epsilon
            scalars[f"delta/{name}"] = site.delta
            scalars[f"dp_steps/{name}"] = float(site.dp_steps)
            scalars[f"train_loss/{name}"] = site.train_loss
    return {tag: float(v) for tag, v in scalars.items() if v is not None and math.isfinite(float(v))}


class RoundTracker:
    """Writes each round's scalars under ``out_dir/tensorboard``; the writer opens on the first
    round it is given (that round is the purge step of a resumed study)."""

    def __init__(self, out_dir: Path) -> None:
        self.log_dir = Path(out_dir) / TENSORBOARD_DIR
        self._writer: SummaryWriter | None = None
        self._last_round = 0
        self._broken = False

    def log_round(self, report: RoundReport) -> bool:
        """Write one round (flushed at once); False if tracking is off after an error."""
        if self._broken:
            return False
        if report.round <= self._last_round:
            return True  # already written by this tracker: never a second point for a round
        try:
            writer = self._open(report.round)
            for tag, value in round_scalars(report).items():
                writer.add_scalar(tag, value, global_step=report.round)
            if report.failures:
                writer.add_text("failures", "\n\n".join(f"- {f}" for f in report.failures), global_step=report.round)
            writer.flush()
        except Exception as error:  # noqa: BLE001 - monitoring must not fail the study
            self._broken = True
            logger.warning("TensorBoard tracking in %s stopped: %s", self.log_dir, error,
                           extra={"round": report.round})
            return False
        self._last_round = report.round
        return True

    def _open(self, first_round: int) -> SummaryWriter:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - tensorboard only when used

            self.log_dir.mkdir(parents=True, exist_ok=True)
            # purge_step: readers discard what earlier event files hold for rounds >= first_round.
            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=first_round if first_round > 1 else None,
                                         flush_secs=10)
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RoundTracker:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``log_dir`` as (step, value) pairs per tag, as TensorBoard shows them
    (purged points dropped). For tests and reports."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
