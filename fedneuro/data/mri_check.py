"""A site operator's report on MRI data against a study: who, which images, what went wrong."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from fedneuro.data.mri import load_site_volumes, mri_cohort
from fedneuro.data.mri_harmonise import VolumeReport
from fedneuro.data.mri_spec import MRIContract, MRIDataSpec


class MRICheck(BaseModel):
    root: str
    contract: MRIContract
    eligible: list[str]
    excluded: dict[str, str]
    images: list[VolumeReport]
    refused: dict[str, str]
    without_images: dict[str, str]
    samples_per_class: dict[str, int]
    source_orientations: dict[str, int]
    source_voxel_sizes_mm: dict[str, int]
    problems: list[str]
    usable: bool


def check_mri_site(root: Path, spec: MRIDataSpec, contract: MRIContract) -> MRICheck:
    """Harmonise every eligible image (bad ones skipped and listed) and judge usability."""
    cohort = mri_cohort(root, spec)
    volumes = load_site_volumes(root, cohort, contract, spec, on_error="skip")
    names = {index: name for name, index in spec.classes.items()}
    counts = Counter(names[int(c)] for c in volumes.y)
    per_class = {name: counts.get(name, 0) for name in spec.classes}
    problems = [f"{file}: {reason}" for file, reason in volumes.report.refused.items()]
    problems += [f"{pid}: {reason}" for pid, reason in volumes.report.without_volumes.items()]
    missing = [name for name, n in per_class.items() if n == 0]
    if missing:
        problems.append(f"no usable image for class(es) {missing}: the study cannot learn them here")
    usable = len(volumes.participant_ids) >= 2 and not missing
    return MRICheck(
        root=str(root),
        contract=contract,
        eligible=list(cohort.participant_ids),
        excluded=dict(cohort.excluded),
        images=volumes.report.volumes,
        refused=dict(volumes.report.refused),
        without_images=dict(volumes.report.without_volumes),
        samples_per_class=per_class,
        source_orientations=dict(Counter(v.source.orientation for v in volumes.report.volumes)),
        source_voxel_sizes_mm=dict(Counter("x".join(f"{z:g}" for z in v.source.voxel_size_mm) for v in volumes.report.volumes)),
        problems=problems,
        usable=usable,
    )
