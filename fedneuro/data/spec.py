"""The study's data section and the input contract a backbone imposes on the data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class InputContract(BaseModel):
    """What a backbone expects: channel names in order, sampling rate, window length.

    Uses braindecode's vocabulary (``chs_info`` names, ``sfreq``, ``input_window_seconds``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[str, ...] = Field(min_length=1)
    sfreq: float = Field(gt=0)
    input_window_seconds: float = Field(gt=0)

    @property
    def n_chans(self) -> int:
        return len(self.channels)

    @property
    def n_times(self) -> int:
        return int(round(self.input_window_seconds * self.sfreq))


class DataSpec(BaseModel):
    """``[data]`` of the study file: what to learn and how to turn recordings into windows."""

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
        description="participants.tsv column that must hold one of consent_values; "
        "None uses every participant (only for data with consent handled elsewhere)",
    )
    consent_values: list[str] = Field(default_factory=lambda: ["yes"], min_length=1)
    task: str | None = Field(default=None, description="BIDS task to use; None = all tasks")
    window_stride_seconds: float | None = Field(
        default=None, gt=0, description="stride between windows; None = no overlap"
    )
    l_freq: float | None = Field(default=0.5, ge=0, description="high-pass cut-off in Hz")
    h_freq: float | None = Field(default=45.0, gt=0, description="low-pass cut-off in Hz")
    notch: bool = Field(
        default=True, description="notch the recording's power-line frequency and harmonics"
    )
    normalisation: Literal["recording", "none"] = Field(
        default="recording",
        description="'recording' divides each recording by its robust amplitude scale "
        "(removes site gain differences); 'none' keeps volts scaled to 100 µV units",
    )
    max_missing_channels: int = Field(
        default=4, ge=0, description="channels of the montage a recording may lack "
        "(interpolated); more and the recording is refused"
    )
    test_fraction: float = Field(default=0.3, gt=0, lt=1)

    @field_validator("classes")
    @classmethod
    def _classes_are_contiguous(cls, classes: dict[str, int]) -> dict[str, int]:
        if len(classes) < 2:
            raise ValueError(f"needs at least two classes, got {classes}")
        indices = sorted(set(classes.values()))
        if indices != list(range(len(indices))):
            raise ValueError(
                f"class indices must be 0..K-1 without gaps, got {sorted(classes.values())}"
            )
        return classes

    @model_validator(mode="after")
    def _band_is_ordered(self) -> DataSpec:
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ValueError(f"l_freq ({self.l_freq}) must be below h_freq ({self.h_freq})")
        return self

    @property
    def n_classes(self) -> int:
        return len(set(self.classes.values()))
