"""The study's MRI data section and the input contract an MRI encoder imposes on volumes.

Vocabulary: a volume's array axes are (D, H, W) = (x, y, z) in RAS+ world order, i.e.
index 0 grows to the subject's Right, 1 to Anterior, 2 to Superior (nibabel's canonical
orientation). Voxel sizes are in millimetres.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fedneuro.data.spec import DataSpec, check_class_indices

__all__ = [
    "ANAT_SUFFIXES",
    "FUNC_SUFFIXES",
    "MAX_VOXEL_MM",
    "MIN_VOXEL_MM",
    "MRIContract",
    "MRIDataSpec",
]

#: BIDS suffixes of anatomical (3-D) images this layer reads, under ``anat/``.
ANAT_SUFFIXES: tuple[str, ...] = ("T1w", "T2w", "FLAIR")
#: BIDS suffixes of functional (4-D, time last) images, under ``func/``.
FUNC_SUFFIXES: tuple[str, ...] = ("bold",)
#: Plausible voxel edge lengths (mm): outside this a header is wrong (or not in mm).
MIN_VOXEL_MM = 0.05
MAX_VOXEL_MM = 20.0

_LABEL = re.compile(r"^[A-Za-z0-9]+$")


class MRIContract(BaseModel):
    """What an MRI encoder expects: grid ``shape`` (x, y, z in RAS+), ``voxel_size_mm``,
    and ``n_channels`` input channels per sample (1 for a T1w image or one fMRI summary).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, int, int] = Field(description="output grid (x, y, z), RAS+ order")
    voxel_size_mm: tuple[float, float, float] = Field(description="output voxel edges in mm")
    n_channels: int = Field(default=1, ge=1, le=16)

    @field_validator("shape")
    @classmethod
    def _shape_is_sane(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 4 <= s <= 1024 for s in shape):
            raise ValueError(
                f"every dimension of 'shape' must be in [4, 1024] voxels, got {shape}"
            )
        return shape

    @field_validator("voxel_size_mm")
    @classmethod
    def _voxels_are_sane(cls, size: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not MIN_VOXEL_MM <= v <= MAX_VOXEL_MM for v in size):
            raise ValueError(
                f"every entry of 'voxel_size_mm' must be in [{MIN_VOXEL_MM}, {MAX_VOXEL_MM}] "
                f"mm, got {size}"
            )
        return size

    @property
    def field_of_view_mm(self) -> tuple[float, float, float]:
        """Extent of the output grid in mm along x, y, z."""
        x, y, z = (s * v for s, v in zip(self.shape, self.voxel_size_mm))
        return (x, y, z)

    @property
    def n_voxels(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]


class MRIDataSpec(BaseModel):
    """``[mri]`` data section of a study: which images to use and how to harmonise them.

    The eligibility fields (``label_column``, ``classes``, ``consent_column``,
    ``consent_values``) mean exactly what they mean in the EEG ``DataSpec``;
    :meth:`participants_spec` hands them to ``fedneuro.data.bids``.
    """

    model_config = ConfigDict(extra="forbid")

    label_column: str = Field(
        default="diagnosis", description="participants.tsv column holding the label"
    )
    classes: dict[str, int] = Field(
        default_factory=lambda: {"normal": 0, "abnormal": 1},
        description="label value in participants.tsv -> class index (0..K-1)",
    )
    consent_column: str | None = Field(
        default="consent",
        description="participants.tsv column that must hold one of consent_values; None "
        "uses every participant (only for data with consent handled elsewhere)",
    )
    consent_values: list[str] = Field(default_factory=lambda: ["yes"], min_length=1)
    suffix: Literal["T1w", "T2w", "FLAIR", "bold"] = Field(
        default="T1w",
        description="BIDS suffix of the images to use: anatomical (anat/, 3-D) or 'bold' "
        "(func/, 4-D)",
    )
    session: str | None = Field(
        default=None, description="BIDS session label to use (without 'ses-'); None = all"
    )
    task: str | None = Field(
        default=None, description="BIDS task label of the bold runs to use; None = all tasks"
    )
    intensity_normalisation: Literal["zscore-foreground", "minmax", "none"] = Field(
        default="zscore-foreground",
        description="'zscore-foreground': subtract the mean and divide by the standard "
        "deviation of the head (foreground found by an Otsu threshold; no skull stripping); "
        "'minmax': map the minmax_percentiles of the image to 0..1 and clip; 'none': keep "
        "scanner units (site scales differ: only for models trained on raw values)",
    )
    minmax_percentiles: tuple[float, float] = Field(
        default=(0.5, 99.5), description="percentiles mapped to 0 and 1 by 'minmax'"
    )
    crop_centre: Literal["foreground", "field-of-view"] = Field(
        default="foreground",
        description="centre of the output grid: the head's centre of mass ('foreground', "
        "robust to off-centre heads) or the centre of the scanned field of view",
    )
    min_foreground_kept: float = Field(
        default=0.8, ge=0, le=1,
        description="refuse an image when the output grid keeps less than this fraction "
        "of its head voxels (the contract's field of view is too small for it)",
    )
    fmri_mode: Literal["mean", "std", "mean_std", "volumes"] | None = Field(
        default=None,
        description="bold only: 'mean' / 'std' temporal summary image (1 channel), "
        "'mean_std' both (2 channels), 'volumes' one sample per volume; None = 'mean' for "
        "bold",
    )
    drop_initial_volumes: int = Field(
        default=0, ge=0, description="bold only: non-steady-state volumes to discard"
    )
    test_fraction: float = Field(default=0.3, gt=0, lt=1)

    @field_validator("classes")
    @classmethod
    def _classes_are_contiguous(cls, classes: dict[str, int]) -> dict[str, int]:
        return check_class_indices(classes)

    @field_validator("session", "task", mode="before")
    @classmethod
    def _bids_label(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            return None
        prefix = "ses-" if info.field_name == "session" else "task-"
        text = str(value).removeprefix(prefix)
        if not _LABEL.match(text):
            raise ValueError(
                f"a BIDS {info.field_name} label is letters and digits only (e.g. "
                f"'{prefix}01' is given as '01'), got {value!r}"
            )
        return text

    @field_validator("minmax_percentiles")
    @classmethod
    def _percentiles_ordered(cls, p: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= p[0] < p[1] <= 100.0:
            raise ValueError(f"need 0 <= low < high <= 100, got {p}")
        return p

    @model_validator(mode="after")
    def _mode_fits_suffix(self) -> MRIDataSpec:
        if self.suffix in FUNC_SUFFIXES:
            if self.fmri_mode is None:
                self.fmri_mode = "mean"
            return self
        bold_only = [
            name
            for name, value, default in (
                ("fmri_mode", self.fmri_mode, None),
                ("drop_initial_volumes", self.drop_initial_volumes, 0),
                ("task", self.task, None),
            )
            if value != default
        ]
        if bold_only:
            raise ValueError(
                f"{bold_only} apply to functional images only, but suffix is "
                f"{self.suffix!r}. Remove them or set suffix = 'bold'."
            )
        return self

    @property
    def datatype(self) -> Literal["anat", "func"]:
        """BIDS folder of the images: ``anat`` or ``func``."""
        return "func" if self.suffix in FUNC_SUFFIXES else "anat"

    @property
    def n_channels(self) -> int:
        """Channels per sample this spec produces (2 for ``fmri_mode='mean_std'``)."""
        return 2 if self.fmri_mode == "mean_std" else 1

    @property
    def n_classes(self) -> int:
        return len(set(self.classes.values()))

    def participants_spec(self) -> DataSpec:
        """The eligibility fields as a ``DataSpec`` for ``read_participants`` /
        ``eligible_participants`` (the governance gate is shared with EEG)."""
        return DataSpec(
            label_column=self.label_column,
            classes=dict(self.classes),
            consent_column=self.consent_column,
            consent_values=list(self.consent_values),
            test_fraction=self.test_fraction,
        )

    def check_contract(self, contract: MRIContract) -> None:
        """Raise ``ValueError`` when this spec cannot feed ``contract``."""
        if contract.n_channels != self.n_channels:
            raise ValueError(
                f"The MRI contract expects n_channels={contract.n_channels}, but suffix "
                f"{self.suffix!r} with fmri_mode={self.fmri_mode!r} produces "
                f"{self.n_channels}. Use fmri_mode='mean_std' for 2 channels, another mode "
                "for 1."
            )
