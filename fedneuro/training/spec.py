"""The study's ``[training]`` section: local optimisation at each site."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=32, ge=1, description="expected (Poisson) batch size")
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
