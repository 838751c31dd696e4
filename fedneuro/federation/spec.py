"""The study's ``[federation]`` section: rounds, strategy, bounded waits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FederationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(default=5, ge=1, le=10_000)
    strategy: Literal["fedavg"] = "fedavg"
    min_sites: int | None = Field(
        default=None, ge=1, description="sites required per round; None = every site of the run"
    )
    connect_timeout_s: float = Field(
        default=300.0, gt=0, description="how long to wait for the sites to connect"
    )
    round_timeout_s: float = Field(
        default=900.0, gt=0, description="how long one round's replies are awaited"
    )
