"""MRI study settings: the encoder contract and the data spec validate early, clearly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedneuro.data.mri_spec import MRIContract, MRIDataSpec

pytestmark = pytest.mark.filterwarnings("error")


def test_contract_defaults_and_properties() -> None:
    c = MRIContract(shape=[48, 56, 40], voxel_size_mm=[1.5, 1.5, 2.0])
    assert c.shape == (48, 56, 40) and c.n_channels == 1
    assert c.field_of_view_mm == (72.0, 84.0, 80.0) and c.n_voxels == 48 * 56 * 40
    with pytest.raises(ValidationError):
        c.n_channels = 2  # type: ignore[misc]  # frozen: a contract is shared


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(shape=(48, 48), voxel_size_mm=(1, 1, 1)), "shape"),
        (dict(shape=(2, 48, 48), voxel_size_mm=(1, 1, 1)), r"'shape' must be in \[4, 1024\]"),
        (dict(shape=(48, 48, 48), voxel_size_mm=(0, 1, 1)), r"'voxel_size_mm' must be in"),
        (dict(shape=(48, 48, 48), voxel_size_mm=(1, 1, 50)), r"'voxel_size_mm' must be in"),
        (dict(shape=(48, 48, 48), voxel_size_mm=(1, 1, 1), n_channels=0), "n_channels"),
        (dict(shape=(48, 48, 48), voxel_size_mm=(1, 1, 1), extra=1), "extra"),
    ],
)
def test_contract_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        MRIContract(**kwargs)


def test_spec_defaults() -> None:
    s = MRIDataSpec()
    assert s.suffix == "T1w" and s.datatype == "anat" and s.fmri_mode is None
    assert s.intensity_normalisation == "zscore-foreground" and s.crop_centre == "foreground"
    assert s.classes == {"normal": 0, "abnormal": 1} and s.n_classes == 2 and s.n_channels == 1
    gate = s.participants_spec()
    assert (gate.label_column, gate.consent_column, gate.consent_values) == (
        "diagnosis", "consent", ["yes"]
    )
    bold = MRIDataSpec(suffix="bold", task="task-rest", session="ses-01")
    assert bold.datatype == "func" and bold.fmri_mode == "mean"
    assert bold.task == "rest" and bold.session == "01"
    assert MRIDataSpec(suffix="bold", fmri_mode="mean_std").n_channels == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(fmri_mode="mean"), r"\['fmri_mode'\] apply to functional images only.*'T1w'"),
        (dict(suffix="T2w", task="rest", drop_initial_volumes=2),
         r"\['drop_initial_volumes', 'task'\] apply to functional"),
        (dict(suffix="T1", ), "suffix"),
        (dict(intensity_normalisation="zscore"), "intensity_normalisation"),
        (dict(classes={"a": 0}), "at least two classes"),
        (dict(classes={"a": 0, "b": 2}), "0..K-1 without gaps"),
        (dict(session="01/x"), "letters and digits only"),
        (dict(minmax_percentiles=(99, 1)), r"low < high"),
        (dict(consent_values=[]), "consent_values"),
        (dict(min_foreground_kept=1.5), "min_foreground_kept"),
        (dict(voxel_size_mm=(1, 1, 1)), "Extra inputs are not permitted"),
    ],
)
def test_spec_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        MRIDataSpec(**kwargs)


def test_spec_must_fit_contract() -> None:
    two = MRIContract(shape=(8, 8, 8), voxel_size_mm=(2, 2, 2), n_channels=2)
    with pytest.raises(ValueError, match=r"n_channels=2.*produces 1.*mean_std"):
        MRIDataSpec().check_contract(two)
    MRIDataSpec(suffix="bold", fmri_mode="mean_std").check_contract(two)
