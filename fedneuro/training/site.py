"""One site's prepared inputs for a study: harmonised windows split by participant, and the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedneuro.data.bids import EligibleCohort
from fedneuro.data.harmonise import WindowSet, load_site_windows
from fedneuro.data.splits import split_participants
from fedneuro.governance.site import derive_seed
from fedneuro.models.adapters import AdaptedModel, build_model
from fedneuro.models.registry import get_backbone_preset
from fedneuro.study import Study


@dataclass
class SiteData:
    train: WindowSet
    test: WindowSet
    n_excluded: int


def prepare_site_data(bids_root: Path, cohort: EligibleCohort, study: Study, *, site_name: str) -> SiteData:
    """Read and harmonise only ``cohort``'s recordings, then split by participant."""
    contract = get_backbone_preset(study.model.backbone).contract
    windows = load_site_windows(bids_root, cohort, contract, study.data)
    train_ids, test_ids = split_participants(
        cohort.participant_ids,
        cohort.labels,
        test_fraction=study.data.test_fraction,
        seed=derive_seed(study.study.seed, site_name, "split"),
    )
    return SiteData(
        train=windows.subset(train_ids),
        test=windows.subset(test_ids),
        n_excluded=len(cohort.excluded),
    )


def build_study_model(study: Study) -> AdaptedModel:
    """The study's model, identical at every site and at the coordinator."""
    return build_model(study.model, n_outputs=study.data.n_classes, seed=study.study.seed)
