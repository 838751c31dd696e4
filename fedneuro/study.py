"""The study file: the single source of truth for what a consortium learns, and how.

One TOML file, validated by :class:`Study`. Each section is owned by the layer that uses it
(data, model, privacy, training, federation); this module only composes and loads them,
and defines ``[governance]``, which belongs to no lower layer: what the study declares to
the sites that review it.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedneuro import __version__
from fedneuro.data.mri_spec import MRIDataSpec
from fedneuro.data.spec import DataSpec
from fedneuro.federation.spec import FederationSpec
from fedneuro.governance.duo import StudyPurpose
from fedneuro.models.spec import ModelSpec
from fedneuro.privacy.spec import PrivacySpec
from fedneuro.training.spec import TrainingSpec


class StudyFileError(ValueError):
    """A study file that cannot be used; the message names the file and every bad key."""


class StudyInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="study identifier")
    title: str = ""
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="seeds model init, splits and sampling")
    modality: Literal["eeg", "mri"] = Field(
        default="eeg", description="'eeg' uses [data]; 'mri' uses [mri] and an MRI backbone"
    )


# What may leave a site, by name (a registry: a site's approval lists these words).
STUDY_OUTPUTS: dict[str, str] = {
    "adapter-tensors": "the trained LoRA adapter and head tensors (the model update), nothing else of the model",
    "aggregate-metrics": "metrics aggregated over at least min_participants_per_metric participants "
    "(losses, counts, confusion counts, ε)",
}


class GovernanceSpec(BaseModel):
    """``[governance]``: what the study declares to the sites' reviewers (signed with the study)."""

    model_config = ConfigDict(extra="forbid")

    purpose: StudyPurpose = Field(description="DUO research category, disease, commercial use, ethics approval")
    requesting_institution: str = Field(min_length=1, description="who asks the sites to train, e.g. 'Charite Berlin'")
    max_epsilon: float = Field(
        gt=0, allow_inf_nan=False,
        description="the study's own cap on ε at any one site, over all its rounds (a site's policy may be stricter)",
    )
    min_cohort: int = Field(ge=1, description="eligible participants a site needs to take part")
    min_participants_per_metric: int = Field(
        ge=1, description="a metric leaves a site only when aggregated over at least this many participants"
    )
    allowed_outputs: list[str] = Field(
        min_length=1, description=f"what may leave a site: any of {', '.join(STUDY_OUTPUTS)}"
    )

    @field_validator("allowed_outputs")
    @classmethod
    def _known_outputs(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in STUDY_OUTPUTS]
        if unknown:
            raise ValueError(f"unknown output(s) {unknown}; allowed outputs are {', '.join(STUDY_OUTPUTS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists an output twice; name each once")
        return value

    @model_validator(mode="after")
    def _metrics_fit_a_cohort(self) -> GovernanceSpec:
        # Otherwise a site with the minimum cohort could never report a metric.
        if self.min_participants_per_metric > self.min_cohort:
            raise ValueError(
                f"min_participants_per_metric ({self.min_participants_per_metric}) exceeds min_cohort "
                f"({self.min_cohort}); raise min_cohort or lower min_participants_per_metric"
            )
        return self


class Study(BaseModel):
    """The whole study file."""

    model_config = ConfigDict(extra="forbid")

    study: StudyInfo
    data: DataSpec = Field(default_factory=DataSpec)
    mri: MRIDataSpec | None = Field(default=None, description="MRI preprocessing (modality = 'mri')")
    model: ModelSpec = Field(default_factory=ModelSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    federation: FederationSpec = Field(default_factory=FederationSpec)
    governance: GovernanceSpec | None = Field(
        default=None,
        description="purpose, ε cap, cohort floors, outputs; sites review it before approving a run "
        "(a study without it cannot be approved)",
    )

    @model_validator(mode="after")
    def _fits_the_backbone(self) -> Study:
        from fedneuro.models.registry import get_backbone_preset

        preset = get_backbone_preset(self.model.backbone)
        modality = getattr(preset, "modality", "eeg")
        if modality != self.study.modality:
            raise ValueError(
                f"[model] backbone {self.model.backbone!r} is an {modality.upper()} model but [study] "
                f"modality is {self.study.modality!r}; pick a backbone of `fedneuro model list` for it"
            )
        if self.study.modality == "mri":
            if self.mri is None:
                raise ValueError("[study] modality = 'mri' needs an [mri] section (label column, classes, preprocessing)")
            return self
        contract = preset.contract
        nyquist = contract.sfreq / 2
        if self.data.h_freq is not None and self.data.h_freq >= nyquist:
            raise ValueError(
                f"[data] h_freq ({self.data.h_freq} Hz) must be below the Nyquist frequency "
                f"({nyquist:g} Hz) of backbone {self.model.backbone!r}'s {contract.sfreq:g} Hz input"
            )
        return self

    @property
    def n_classes(self) -> int:
        spec = self.mri if self.study.modality == "mri" and self.mri else self.data
        return len(set(spec.classes.values()))

    def digest(self) -> str:
        """sha256 over the canonical JSON of every setting (what later approvals sign)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_json(self) -> str:
        """Canonical JSON, stamped with the package version that wrote it."""
        return json.dumps(
            {"fedneuro_version": __version__, "study": self.model_dump(mode="json")},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Study:
        return cls.model_validate(json.loads(text)["study"])


def parse_study(text: str, *, source: str = "<study>") -> Study:
    """Parse TOML text into a Study; errors name ``source`` and each bad key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyFileError(f"{source} is not valid TOML: {error}") from error
    try:
        return Study.model_validate(raw)
    except ValidationError as error:
        raise StudyFileError(format_validation_error(error, source=source)) from error


def load_study(path: Path) -> Study:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise StudyFileError(f"cannot read study file {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise StudyFileError(f"study file {path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    return parse_study(text, source=str(path))


def default_study_path(modality: Literal["eeg", "mri"] = "eeg") -> Path:
    """The demo study of a modality that ships with the package: the template to copy."""
    name = "demo.toml" if modality == "eeg" else "demo-mri.toml"
    return Path(str(resources.files("fedneuro") / "studies" / name))


def format_validation_error(error: ValidationError, *, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid setting(s):"]
    for item in error.errors():
        location = _toml_location(item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the template `fedneuro study template`)"
        elif "input" in item and item["type"] != "missing":
            message = f"{message} (got {item['input']!r})"
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def _toml_location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) <= 1:
        return f"[{parts[0]}]" if parts else "<file>"
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"
