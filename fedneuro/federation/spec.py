"""The study's ``[federation]`` section: rounds, strategy, update validation, bounded waits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StrategyName = Literal["fedavg", "fedprox", "fedadam", "fedyogi", "trimmed-mean", "multikrum"]


class FederationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(default=5, ge=1, le=10_000)
    strategy: StrategyName = Field(
        default="fedavg",
        description="fedavg; fedprox (sites add a proximal term, proximal_mu); fedadam / fedyogi "
        "(server optimiser, server_learning_rate); trimmed-mean (trim_fraction) and multikrum "
        "(byzantine_sites) are robust to a few hostile updates",
    )
    proximal_mu: float = Field(default=0.01, ge=0, description="fedprox: weight of (mu/2)·||w - w_global||²")
    server_learning_rate: float = Field(default=0.1, gt=0, description="fedadam / fedyogi: server step size η")
    trim_fraction: float = Field(default=0.2, ge=0, lt=0.5, description="trimmed-mean: fraction cut at each end")
    byzantine_sites: int = Field(default=1, ge=0, description="multikrum: hostile sites to tolerate")
    max_update_norm: float | None = Field(
        default=None,
        gt=0,
        description="reject a site's update whose L2 distance from the global model exceeds this "
        "(audited in the round's failures; the round proceeds with the others). None = off",
    )
    min_sites: int | None = Field(
        default=None, ge=1, description="sites required per round; None = every site of the run"
    )
    connect_timeout_s: float = Field(
        default=300.0, gt=0, description="how long to wait for the sites to connect"
    )
    round_timeout_s: float = Field(
        default=900.0, gt=0, description="how long one round's replies are awaited"
    )

    @model_validator(mode="after")
    def _robust_needs_sites(self) -> FederationSpec:
        if self.strategy == "multikrum" and self.min_sites is not None and self.min_sites < 2 * self.byzantine_sites + 3:
            raise ValueError(
                f"multikrum tolerating {self.byzantine_sites} hostile site(s) needs at least "
                f"{2 * self.byzantine_sites + 3} sites per round, but min_sites is {self.min_sites}"
            )
        return self
