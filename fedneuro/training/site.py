"""One site's prepared inputs for a study: harmonised windows split by participant, and the model."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedneuro.data.bids import EligibleCohort, eligible_participants, read_participants
from fedneuro.data.harmonise import WindowSet, load_site_windows
from fedneuro.data.mri import VolumeSet, load_site_volumes, mri_cohort, split_volume_set
from fedneuro.data.splits import split_participants, split_window_set
from fedneuro.governance.site import derive_seed
from fedneuro.models.adapters import AdaptedModel, build_model
from fedneuro.models.exchange import load_trainable_state
from fedneuro.models.registry import get_backbone_preset
from fedneuro.privacy.audit import MembershipAudit, loss_threshold_audit
from fedneuro.study import Study
from fedneuro.training.local import participant_losses

logger = logging.getLogger(__name__)


@dataclass
class SiteData:
    """A site's model inputs: EEG windows or MRI volumes, split by participant."""

    train: WindowSet | VolumeSet
    test: WindowSet | VolumeSet
    n_excluded: int


def site_cohort(bids_root: Path, study: Study) -> EligibleCohort:
    """The governance gate: who may be used, decided from participants.tsv alone."""
    if study.study.modality == "mri":
        assert study.mri is not None  # guaranteed by Study's validator
        return mri_cohort(bids_root, study.mri)
    return eligible_participants(read_participants(bids_root, study.data), study.data)


def prepare_site_data(
    bids_root: Path,
    cohort: EligibleCohort,
    study: Study,
    *,
    site_name: str,
    cache_dir: Path | None = None,
    split_universe: EligibleCohort | None = None,
) -> SiteData:
    """Read and harmonise only ``cohort``'s recordings, then split by participant.

    A recording that cannot be harmonised is skipped and logged with its reason (one bad
    file should not stop a hospital's participation); the split uses only participants
    that kept at least one sample. With ``split_universe`` (a superset of ``cohort``, e.g.
    everyone participants.tsv admits before consent is applied) the train/test assignment
    is decided over that set, so a withdrawal never moves a test participant into training.
    """
    contract = get_backbone_preset(study.model.backbone).contract
    seed = derive_seed(study.study.seed, site_name, "split")
    if study.study.modality == "mri":
        assert study.mri is not None
        volumes = load_site_volumes(bids_root, cohort, contract, study.mri, on_error="skip")  # type: ignore[arg-type]
        for refused in volumes.report.refused:
            logger.warning("site %s: image skipped: %s", site_name, refused)
        if split_universe is None:
            train, test = split_volume_set(volumes, test_fraction=study.mri.test_fraction, seed=seed)
        else:
            train, test = _split_over(volumes, split_universe, test_fraction=study.mri.test_fraction, seed=seed)
        return SiteData(train=train, test=test, n_excluded=len(cohort.excluded))
    windows = load_site_windows(bids_root, cohort, contract, study.data, on_error="skip", cache_dir=cache_dir)  # type: ignore[arg-type]
    for refused in windows.report.refused:
        logger.warning("site %s: recording skipped: %s", site_name, refused)
    if split_universe is None:
        train, test = split_window_set(windows, test_fraction=study.data.test_fraction, seed=seed)
    else:
        train, test = _split_over(windows, split_universe, test_fraction=study.data.test_fraction, seed=seed)
    return SiteData(train=train, test=test, n_excluded=len(cohort.excluded))


def _split_over(samples: WindowSet | VolumeSet, universe: EligibleCohort, *, test_fraction: float, seed: int):  # type: ignore[no-untyped-def]
    """Split ``universe`` by participant, then keep the participants ``samples`` holds."""
    labels = [0] * len(universe.labels) if any(label < 0 for label in universe.labels) else list(universe.labels)
    train_ids, test_ids = split_participants(universe.participant_ids, labels, test_fraction=test_fraction, seed=seed)
    present = set(samples.participant_ids)
    return samples.subset([p for p in train_ids if p in present]), samples.subset([p for p in test_ids if p in present])


def build_study_model(study: Study) -> AdaptedModel:
    """The study's model, identical at every site and at the coordinator."""
    return build_model(study.model, n_outputs=study.n_classes, seed=study.study.seed)


def audit_membership(study: Study, bids_root: Path, *, site_name: str, adapter: Mapping[str, np.ndarray]) -> MembershipAudit:
    """Loss-threshold membership inference on a site's train (members) vs held-out participants."""
    data = prepare_site_data(bids_root, site_cohort(bids_root, study), study, site_name=site_name)
    model = build_study_model(study)
    load_trainable_state(model.module, adapter)
    return loss_threshold_audit(
        participant_losses(model.module, data.train.X, data.train.y, data.train.participant),
        participant_losses(model.module, data.test.X, data.test.y, data.test.participant),
        seed=derive_seed(study.study.seed, site_name, "audit"),
    )
