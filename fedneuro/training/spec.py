"""The study's ``[training]`` section: local optimisation at each site."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(
        default=16, ge=1, description="expected privacy units (participants, or windows) per step; Poisson sampled"
    )
    learning_rate: float = Field(default=0.1, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    optimizer: Literal["sgd", "adam"] = Field(
        default="sgd",
        description="'sgd' (with momentum) is the robust choice under DP noise; Adam's per-"
        "coordinate scaling amplifies noise in coordinates with little signal",
    )
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
