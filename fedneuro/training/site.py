"""One site's prepared inputs for a study: harmonised windows split by participant, and the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fedneuro.data.bids import EligibleCohort
from fedneuro.data.harmonise import WindowSet, load_site_windows
from fedneuro.data.splits import split_window_set
from fedneuro.governance.site import derive_seed
from fedneuro.models.adapters import AdaptedModel, build_model
from fedneuro.models.registry import get_backbone_preset
from fedneuro.study import Study

logger = logging.getLogger(__name__)


@dataclass
class SiteData:
    train: WindowSet
    test: WindowSet
    n_excluded: int


def prepare_site_data(bids_root: Path, cohort: EligibleCohort, study: Study, *, site_name: str) -> SiteData:
    """Read and harmonise only ``cohort``'s recordings, then split by participant.

    A recording that cannot be harmonised is skipped and logged with its reason (one bad
    file should not stop a hospital's participation); the split uses only participants
    that kept at least one window.
    """
    contract = get_backbone_preset(study.model.backbone).contract
    windows = load_site_windows(bids_root, cohort, contract, study.data, on_error="skip")
    for refused in windows.report.refused:
        logger.warning("site %s: recording skipped: %s", site_name, refused)
    train, test = split_window_set(
        windows,
        test_fraction=study.data.test_fraction,
        seed=derive_seed(study.study.seed, site_name, "split"),
    )
    return SiteData(train=train, test=test, n_excluded=len(cohort.excluded))


def build_study_model(study: Study) -> AdaptedModel:
    """The study's model, identical at every site and at the coordinator."""
    return build_model(study.model, n_outputs=study.data.n_classes, seed=study.study.seed)
