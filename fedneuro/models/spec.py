"""The study's ``[model]`` section (torch-free, so governance can read it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AdapterSpec(BaseModel):
    """What is trained and exchanged on top of the frozen backbone."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["lora+head", "head"] = Field(
        default="lora+head",
        description="'lora+head': LoRA on the preset's verified targets plus the head; "
        "'head': linear probe, backbone fully frozen",
    )
    rank: int = Field(default=8, ge=1, le=256)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    targets: list[str] | None = Field(
        default=None,
        description="module-name suffixes to wrap with LoRA; None = the preset's targets, "
        "which are tested to receive gradients",
    )

    @model_validator(mode="after")
    def _targets_only_for_lora(self) -> AdapterSpec:
        if self.kind == "head" and self.targets:
            raise ValueError("targets are only used with kind = 'lora+head'")
        if self.targets is not None and not self.targets:
            raise ValueError("targets is empty: leave it out to use the preset's targets")
        return self


class ModelSpec(BaseModel):
    """``[model]``: backbone preset, optional local weights, adapter."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = Field(default="biot-small", description="a preset of `fedneuro model list`")
    weights: Path | None = Field(
        default=None,
        description="local pretrained backbone weights (.safetensors or .pt state dict); "
        "None = random initialisation from the study seed",
    )
    adapter: AdapterSpec = Field(default_factory=AdapterSpec)
