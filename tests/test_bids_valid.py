"""The synthetic sites are valid BIDS (file names and layout, checked by bids-validator)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bids_validator import BIDSValidator

from fedneuro.data.synth import DEFAULT_PROFILES, synthesize_site
from fedneuro.data.synth_mri import DEFAULT_MRI_PROFILES, synthesize_mri_site


def _invalid(root: Path) -> list[str]:
    validator = BIDSValidator()
    files = ["/" + str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    assert files
    return [f for f in files if not validator.is_bids(f)]


def test_synthetic_eeg_sites_are_valid_bids(data_consortium) -> None:
    for root in data_consortium.values():
        assert _invalid(root) == []


@pytest.mark.parametrize("fmt", ["bdf", "brainvision", "eeglab"])
def test_synthetic_eeg_in_other_formats_is_valid_bids(tmp_path: Path, fmt: str) -> None:
    root = synthesize_site(tmp_path, DEFAULT_PROFILES[1], n_participants=4, duration_s=10.0, seed=0, format=fmt, task="oddball")
    assert _invalid(root) == []


def test_synthetic_mri_sites_are_valid_bids(tmp_path: Path) -> None:
    root = synthesize_mri_site(tmp_path, DEFAULT_MRI_PROFILES[2], n_participants=4, seed=0, n_bold_volumes=3)
    assert _invalid(root) == []
