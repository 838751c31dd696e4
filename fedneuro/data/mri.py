"""MRI data of one site: the eligible cohort's NIfTI images -> a ``VolumeSet``.

The public entry points of the MRI data layer live here; reading is in ``mri_read``,
harmonisation in ``mri_harmonise``, the study's settings in ``mri_spec``. As for EEG, the
governance gate (``mri_cohort``: ``participants.tsv`` only) comes first, and
``load_site_volumes`` opens only the files of the participants it let through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedneuro.data.bids import EligibleCohort, eligible_participants, read_participants
from fedneuro.data.mri_harmonise import VolumeReport, harmonise_volume
from fedneuro.data.mri_read import MRIFileError, mri_paths_for, read_nifti
from fedneuro.data.mri_spec import MRIContract, MRIDataSpec
from fedneuro.data.splits import split_participants

__all__ = [
    "MRIFileError",
    "MRISiteReport",
    "VolumeReport",
    "VolumeSet",
    "load_site_volumes",
    "load_volume_file",
    "mri_cohort",
    "split_volume_set",
]

logger = logging.getLogger(__name__)


class MRISiteReport(BaseModel):
    """Per-file reports, refused files (name -> reason) and participants left without
    samples (id -> reason). ``model_dump_json()`` gives the site operator's record."""

    model_config = ConfigDict(extra="forbid")

    volumes: list[VolumeReport] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict)
    without_volumes: dict[str, str] = Field(default_factory=dict)

    @property
    def n_outputs(self) -> int:
        return sum(v.n_outputs for v in self.volumes)

    def summary(self) -> str:
        """One line for logs."""
        orientations = sorted({v.source.orientation for v in self.volumes})
        return (
            f"{len(self.volumes)} images -> {self.n_outputs} samples (source orientations "
            f"{orientations or 'none'}), {len(self.refused)} refused, "
            f"{len(self.without_volumes)} participants without images"
        )


@dataclass
class VolumeSet:
    """Samples of one site: ``X`` (n, C, x, y, z) float32 in RAS+ order, ``y`` and
    ``participant`` int64; ``participant[i]`` indexes ``participant_ids``, and every
    listed participant has at least one sample."""

    X: np.ndarray
    y: np.ndarray
    participant: np.ndarray
    participant_ids: list[str]
    report: MRISiteReport

    def __post_init__(self) -> None:
        n = len(self.X)
        if self.X.ndim != 5 or len(self.y) != n or len(self.participant) != n:
            raise ValueError(
                f"VolumeSet needs X (n, C, x, y, z) with y and participant of length n; got "
                f"X {self.X.shape}, y {self.y.shape}, participant {self.participant.shape}."
            )

    def __len__(self) -> int:
        return len(self.X)

    @property
    def participant_labels(self) -> np.ndarray:
        """Class index of each entry of ``participant_ids`` (int64)."""
        labels = np.full(len(self.participant_ids), -1, dtype=np.int64)
        labels[self.participant] = self.y
        return labels

    def subset(self, participant_ids: Iterable[str]) -> VolumeSet:
        """The samples of the given participants (kept in this set's order).

        Ids in ``report.without_volumes`` (known, nothing usable) are skipped; any other
        id without samples is an error.
        """
        wanted = set(participant_ids)
        unknown = sorted(wanted - set(self.participant_ids) - set(self.report.without_volumes))
        if unknown:
            raise ValueError(
                f"Invalid value for the 'participant_ids' parameter: {unknown} have no "
                f"volumes in this set (known: {len(self.participant_ids)} participants)."
            )
        keep_ids = [p for p in self.participant_ids if p in wanted]
        old_to_new = np.full(len(self.participant_ids), -1, dtype=np.int64)
        for new, pid in enumerate(keep_ids):
            old_to_new[self.participant_ids.index(pid)] = new
        mask = old_to_new[self.participant] >= 0
        report = MRISiteReport(
            volumes=[v for v in self.report.volumes if v.participant_id in wanted],
            refused=dict(self.report.refused),
            without_volumes=dict(self.report.without_volumes),
        )
        return VolumeSet(
            X=self.X[mask],
            y=self.y[mask],
            participant=old_to_new[self.participant[mask]],
            participant_ids=keep_ids,
            report=report,
        )


def mri_cohort(bids_root: str | Path, spec: MRIDataSpec) -> EligibleCohort:
    """The governance gate for MRI: eligibility from ``participants.tsv`` alone."""
    gate = spec.participants_spec()
    return eligible_participants(read_participants(Path(bids_root), gate), gate)


def load_volume_file(
    path: str | Path, contract: MRIContract, spec: MRIDataSpec
) -> tuple[np.ndarray, VolumeReport]:
    """Read and harmonise one loose NIfTI file: ``(n, C, x, y, z)`` float32 and a report."""
    return harmonise_volume(read_nifti(path, suffix=spec.suffix), contract, spec)


def load_site_volumes(
    bids_root: str | Path,
    cohort: EligibleCohort,
    contract: MRIContract,
    spec: MRIDataSpec,
    *,
    on_error: Literal["raise", "skip"] = "raise",
) -> VolumeSet:
    """Harmonise the images of the eligible ``cohort`` of one BIDS site into samples.

    Only files of participants in ``cohort`` are listed and opened. Every file is tried;
    with ``on_error="raise"`` one ``MRIFileError`` then lists all refused files, with
    ``"skip"`` they are left out and listed in ``report.refused``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(
            f"Invalid value for the 'on_error' parameter. Allowed values are 'raise' and "
            f"'skip', but got {on_error!r} instead."
        )
    spec.check_contract(contract)
    bids_root = Path(bids_root)
    if not bids_root.is_dir():
        raise ValueError(
            f"Invalid value for the 'bids_root' parameter: {bids_root} is not a directory."
        )
    report = MRISiteReport()
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    ids: list[str] = []
    for pid, label in zip(cohort.participant_ids, cohort.labels):
        paths = mri_paths_for(bids_root, pid, spec)
        if not paths:
            where = f"{spec.datatype}/*_{spec.suffix}.nii[.gz]"
            report.without_volumes[pid] = f"no image {where} found" + (
                f" (session {spec.session!r})" if spec.session else ""
            ) + (f" (task {spec.task!r})" if spec.task else "")
            continue
        n_before = len(xs)
        for path in paths:
            try:
                vols, rep = load_volume_file(path, contract, spec)
            except MRIFileError as err:  # collect every bad file, report them together
                report.refused[path.name] = err.reason
                continue
            report.volumes.append(rep.model_copy(update={"participant_id": pid}))
            xs.append(vols)
        n_vol = sum(len(x) for x in xs[n_before:])
        if n_vol == 0:
            report.without_volumes[pid] = "every image was refused"
            continue
        ys.append(np.full(n_vol, label, dtype=np.int64))
        parts.append(np.full(n_vol, len(ids), dtype=np.int64))
        ids.append(pid)
    if report.refused and on_error == "raise":
        listing = "\n".join(f"  {f}: {why}" for f, why in sorted(report.refused.items()))
        raise MRIFileError(
            bids_root,
            [f"{len(report.refused)} image file(s) could not be used"],
            f"\n{listing}\nFix them, or pass on_error='skip' to train without them.",
        )
    logger.info("%s: %s", bids_root, report.summary())
    X = (
        np.concatenate(xs)
        if xs
        else np.empty((0, contract.n_channels, *contract.shape), dtype=np.float32)
    )
    return VolumeSet(
        X=X,
        y=np.concatenate(ys) if ys else np.empty(0, dtype=np.int64),
        participant=np.concatenate(parts) if parts else np.empty(0, dtype=np.int64),
        participant_ids=ids,
        report=report,
    )


def split_volume_set(
    vs: VolumeSet, *, test_fraction: float, seed: int
) -> tuple[VolumeSet, VolumeSet]:
    """Participant-disjoint, stratified (train, test) split of a site's volumes."""
    train_ids, test_ids = split_participants(
        vs.participant_ids, vs.participant_labels.tolist(), test_fraction=test_fraction,
        seed=seed,
    )
    return vs.subset(train_ids), vs.subset(test_ids)
