"""The study's data section and the input contract a backbone imposes on the data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def check_class_indices(classes: dict[str, int]) -> dict[str, int]:
    """A label mapping must name at least two classes with indices 0..K-1 and no gaps."""
    if len(classes) < 2:
        raise ValueError(f"needs at least two classes, got {classes}")
    indices = sorted(set(classes.values()))
    if indices != list(range(len(indices))):
        raise ValueError(f"class indices must be 0..K-1 without gaps, got {sorted(classes.values())}")
    return classes


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
        default="diagnosis",
        description="participants.tsv column holding the label (label_source = 'participants')",
    )
    classes: dict[str, int] = Field(
        default_factory=lambda: {"normal": 0, "abnormal": 1},
        description="label value in participants.tsv (event value with label_source = "
        "'events') -> class index (0..K-1)",
    )
    consent_column: str | None = Field(
        default="consent",
        description="participants.tsv column that must hold one of consent_values; "
        "None uses every participant (only for data with consent handled elsewhere)",
    )
    consent_values: list[str] = Field(default_factory=lambda: ["yes"], min_length=1)
    task: str | None = Field(
        default=None,
        description="task to use (BIDS task entity, or the task column of a loose site's "
        "recordings table); None = all tasks",
    )
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

    # --- signal conditioning -----------------------------------------------------------
    reference: Literal["average", "none"] | list[str] = Field(
        default="average",
        description="re-reference: 'average' (common average of the montage), 'none' (keep "
        "the recorded reference) or a list of channel names whose mean is subtracted (e.g. "
        "['A1', 'A2'] for linked ears); named channels must not be montage channels",
    )
    scale_uv: float = Field(
        default=100.0, gt=0,
        description="with normalisation 'none', this many µV become 1.0 in the windows",
    )
    min_sfreq: float | None = Field(
        default=None, gt=0,
        description="recordings sampled below this (Hz) are refused; None = 2 x h_freq (the "
        "band must fit below the recording's Nyquist frequency), or 2 x l_freq without h_freq",
    )
    max_sfreq: float = Field(
        default=50_000.0, gt=0, description="recordings sampled above this (Hz) are refused"
    )
    # --- per-window artefact rejection -------------------------------------------------
    flat_ptp_uv: float | None = Field(
        default=0.1, ge=0,
        description="a window is rejected when any channel's peak-to-peak is below this (µV); "
        "a channel this flat over the whole recording is interpolated; None = no flat check",
    )
    extreme_ptp_uv: float | None = Field(
        default=500.0, gt=0,
        description="a window is rejected when any channel's peak-to-peak exceeds this (µV); "
        "None = no amplitude check",
    )
    # --- labels and windows ------------------------------------------------------------
    label_source: Literal["participants", "events"] = Field(
        default="participants",
        description="'participants': one label per participant from label_column, windows "
        "cut at a fixed stride; 'events': one window per event, labelled by its value "
        "(events.tsv / file annotations) through `classes`",
    )
    event_column: str = Field(
        default="trial_type",
        description="events.tsv column holding the event value mapped by `classes` "
        "(label_source = 'events'); file annotations use their description",
    )
    event_tmin: float = Field(
        default=-0.2,
        description="start of an event-locked window relative to the event onset (s); the "
        "window always has the backbone's length (input_window_seconds)",
    )
    event_tmax: float | None = Field(
        default=None,
        description="end of the event-locked signal (s); samples after it are zero-filled up to "
        "the backbone's window length. None = real signal for the whole window",
    )

    @field_validator("classes")
    @classmethod
    def _classes_are_contiguous(cls, classes: dict[str, int]) -> dict[str, int]:
        return check_class_indices(classes)

    @field_validator("reference")
    @classmethod
    def _reference_channels_listed_once(
        cls, reference: str | list[str]
    ) -> str | list[str]:
        if isinstance(reference, list):
            if not reference or any(not name.strip() for name in reference):
                raise ValueError(
                    f"a list of reference channels must name at least one channel, got "
                    f"{reference}; use 'average' or 'none' for no named reference"
                )
            if len(set(reference)) != len(reference):
                raise ValueError(f"reference channels must be listed once each, got {reference}")
        return reference

    @model_validator(mode="after")
    def _band_is_ordered(self) -> DataSpec:
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ValueError(f"l_freq ({self.l_freq}) must be below h_freq ({self.h_freq})")
        if self.min_sfreq is not None and self.min_sfreq >= self.max_sfreq:
            raise ValueError(
                f"min_sfreq ({self.min_sfreq}) must be below max_sfreq ({self.max_sfreq})"
            )
        if (
            self.flat_ptp_uv is not None
            and self.extreme_ptp_uv is not None
            and self.flat_ptp_uv >= self.extreme_ptp_uv
        ):
            raise ValueError(
                f"flat_ptp_uv ({self.flat_ptp_uv}) must be below extreme_ptp_uv "
                f"({self.extreme_ptp_uv})"
            )
        if self.event_tmax is not None and self.event_tmax <= self.event_tmin:
            raise ValueError(
                f"event_tmax ({self.event_tmax}) must be after event_tmin ({self.event_tmin})"
            )
        return self

    @property
    def n_classes(self) -> int:
        return len(set(self.classes.values()))

    @property
    def lowest_sfreq(self) -> float:
        """Lowest sampling rate a recording may have (Hz): ``min_sfreq`` or what the band needs."""
        if self.min_sfreq is not None:
            return self.min_sfreq
        edge = self.h_freq if self.h_freq is not None else self.l_freq
        return 2.0 * edge if edge else 1.0

    def reject_thresholds_v(self) -> tuple[float | None, float | None]:
        """(flat, extreme) peak-to-peak thresholds in volts; None where disabled."""
        flat = None if self.flat_ptp_uv is None else self.flat_ptp_uv * 1e-6
        extreme = None if self.extreme_ptp_uv is None else self.extreme_ptp_uv * 1e-6
        return flat, extreme

    def event_window(self, contract: InputContract) -> tuple[int, int]:
        """(offset, n_signal) in samples of an event-locked window under ``contract``.

        The window starts ``event_tmin`` s from the onset and is ``contract.n_times`` long;
        the first ``n_signal`` samples carry signal, the rest are zero-filled. Raises
        ``ValueError`` when ``event_tmax`` reaches past the backbone's window.
        """
        offset = int(round(self.event_tmin * contract.sfreq))
        if self.event_tmax is None:
            return offset, contract.n_times
        n_signal = int(round((self.event_tmax - self.event_tmin) * contract.sfreq))
        if n_signal > contract.n_times:
            raise ValueError(
                f"Invalid value for data.event_tmax: the event window [{self.event_tmin}, "
                f"{self.event_tmax}] s is {self.event_tmax - self.event_tmin:g} s long, but the "
                f"backbone takes {contract.input_window_seconds:g} s windows. Set event_tmax <= "
                f"{self.event_tmin + contract.input_window_seconds:g} or leave it out."
            )
        return offset, max(n_signal, 1)
