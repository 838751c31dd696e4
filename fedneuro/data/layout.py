"""Where a site's recordings are: a BIDS tree or a loose-file table, behind one index.

Listing recordings opens no signal file: only file names (BIDS) or the recordings table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fedneuro.data.bids import bids_paths_for
from fedneuro.data.loose import TableRow, find_recordings_table, read_recordings_table
from fedneuro.data.readers import companion_files
from fedneuro.data.spec import DataSpec

if TYPE_CHECKING:
    from mne_bids import BIDSPath

__all__ = ["RecordingRef", "SiteIndex", "site_layout"]

logger = logging.getLogger(__name__)

_BIDS_SIDECARS = (
    ("channels", ".tsv"), ("eeg", ".json"), ("events", ".tsv"), ("electrodes", ".tsv"),
)


def site_layout(root: Path) -> Literal["bids", "loose"]:
    """``"loose"`` when ``root`` holds a recordings table, else ``"bids"``."""
    return "loose" if find_recordings_table(Path(root)) is not None else "bids"


@dataclass(frozen=True)
class RecordingRef:
    """One recording of one participant: its main file and what goes with it."""

    participant_id: str
    path: Path
    root: Path
    bids_path: BIDSPath | None = field(default=None, compare=False, repr=False)
    events_path: Path | None = None
    line_freq: float | None = None

    @property
    def name(self) -> str:
        """The path relative to the site root (as reports show it)."""
        try:
            return self.path.relative_to(self.root).as_posix()
        except ValueError:
            return str(self.path)

    def files(self) -> list[Path]:
        """Every file whose content shapes the windows (for cache keys): the recording,
        its companions (BrainVision .eeg/.vmrk, EEGLAB .fdt) and BIDS sidecars/events."""
        files = companion_files(self.path)
        if self.bids_path is not None:
            for suffix, ext in _BIDS_SIDECARS:
                side = Path(self.bids_path.copy().update(suffix=suffix, extension=ext).fpath)
                if side.is_file() and side not in files:
                    files.append(side)
        if self.events_path is not None:
            files.append(self.events_path)
        return files

    def bids_events(self) -> Path | None:
        """The BIDS events.tsv of this recording, if it has one."""
        if self.bids_path is None:
            return None
        side = Path(self.bids_path.copy().update(suffix="events", extension=".tsv").fpath)
        return side if side.is_file() else None


class SiteIndex:
    """The recordings of a site, by participant (reads the loose table once)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.layout = site_layout(self.root)
        self._table: list[TableRow] = []
        if self.layout == "loose":
            table = find_recordings_table(self.root)
            assert table is not None
            self.table_path = table
            self._table = read_recordings_table(table)

    def recordings(self, participant_id: str, spec: DataSpec) -> list[RecordingRef]:
        """The participant's recordings (of ``spec.task`` where the task is known), sorted."""
        if self.layout == "bids":
            return [
                RecordingRef(participant_id, Path(bp.fpath), self.root, bids_path=bp)
                for bp in bids_paths_for(self.root, participant_id, spec)
            ]
        return [
            RecordingRef(
                participant_id, r.path, self.root, events_path=r.events, line_freq=r.line_freq
            )
            for r in self._table
            if r.participant_id == participant_id
            and (spec.task is None or r.task is None or r.task == spec.task)
        ]

    def participant_ids(self) -> list[str]:
        """Participants that have recordings (BIDS ``sub-*`` folders or table rows)."""
        if self.layout == "loose":
            return sorted({r.participant_id for r in self._table})
        return sorted(
            p.name for p in self.root.glob("sub-*") if p.is_dir() and (p.name[4:] or None)
        )
