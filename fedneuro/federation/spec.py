"""The study's ``[federation]`` section: rounds, strategy, update validation, bounded waits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StrategyName = Literal["fedavg", "fedprox", "fedadam", "fedyogi", "trimmed-mean", "multikrum"]

# Strategies that need only the weighted mean of the updates, which is all secure
# aggregation reveals; robust ones (trimmed mean, Krum) must see every update.
MEAN_BASED_STRATEGIES: frozenset[str] = frozenset({"fedavg", "fedprox", "fedadam", "fedyogi"})


class SecureAggregationSpec(BaseModel):
    """``[federation.secure_aggregation]``: Flower's SecAgg+ over the sites' clipped updates."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="the coordinator learns only the weighted mean of the updates")
    num_shares: int | float = Field(
        default=1.0, gt=0, description="shares of each site's secret: an int > 2, or a fraction of the round's sites"
    )
    reconstruction_threshold: int | float = Field(
        default=0.67, gt=0,
        description="shares needed to unmask (int, or a fraction of num_shares); sites may drop out while "
        "at least this many of each site's share holders remain",
    )
    clipping_range: float | None = Field(
        default=None, gt=0,
        description="each update element is clipped to ±this before quantisation; None = max_update_norm "
        "(an update within that L2 bound has no larger element, so nothing more is clipped)",
    )
    quantization_range: int = Field(
        default=2**24, gt=1,
        description="integer levels an element is quantised to; sites × this must stay below modulus_range",
    )
    modulus_range: int = Field(default=2**32, description="masks live in [0, modulus_range); a power of two ≤ 2**32")
    max_weight: float = Field(
        default=10_000.0, gt=0,
        description="largest num-examples weight a site may report; each update is scaled by weight/max_weight "
        "before quantisation, so a bound close to the real weights keeps more precision",
    )

    @model_validator(mode="after")
    def _consistent_ranges(self) -> SecureAggregationSpec:
        if self.modulus_range > 2**32 or self.modulus_range & (self.modulus_range - 1):
            raise ValueError(f"modulus_range must be a power of two ≤ 2**32, got {self.modulus_range}")
        if self.modulus_range <= self.quantization_range:
            raise ValueError(
                f"modulus_range ({self.modulus_range}) must exceed quantization_range ({self.quantization_range})"
            )
        if isinstance(self.num_shares, float) and self.num_shares > 1:
            raise ValueError(f"num_shares as a fraction must be in (0, 1], got {self.num_shares}")
        if isinstance(self.num_shares, int) and self.num_shares <= 2:
            raise ValueError(f"num_shares as a count must be > 2, got {self.num_shares}; use a fraction such as 1.0")
        if isinstance(self.reconstruction_threshold, float) and self.reconstruction_threshold > 1:
            raise ValueError(f"reconstruction_threshold as a fraction must be in (0, 1], got {self.reconstruction_threshold}")
        return self


class FederationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(default=5, ge=1, le=10_000)
    strategy: StrategyName = Field(
        default="fedavg",
        description="fedavg; fedprox (sites add a proximal term, proximal_mu); fedadam / fedyogi "
        "(server optimiser, server_learning_rate); trimmed-mean (trim_fraction) and multikrum "
        "(byzantine_sites) are robust to a few hostile updates",
    )
    proximal_mu: float = Field(default=0.01, ge=0, allow_inf_nan=False, description="fedprox: weight of (mu/2)·||w - w_global||²")
    server_learning_rate: float = Field(default=0.1, gt=0, allow_inf_nan=False, description="fedadam / fedyogi: server step size η")
    trim_fraction: float = Field(default=0.2, ge=0, lt=0.5, description="trimmed-mean: fraction cut at each end")
    byzantine_sites: int = Field(default=1, ge=0, description="multikrum: hostile sites to tolerate")
    max_update_norm: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="reject a site's update whose L2 distance from the global model exceeds this "
        "(audited in the round's failures; the round proceeds with the others). None = off",
    )
    min_sites: int | None = Field(
        default=None, ge=1, description="sites required per round; None = every site of the run"
    )
    secure_aggregation: SecureAggregationSpec = Field(default_factory=SecureAggregationSpec)
    connect_timeout_s: float = Field(
        default=300.0, gt=0, allow_inf_nan=False, description="how long to wait for the sites to connect"
    )
    round_timeout_s: float = Field(
        default=900.0, gt=0, allow_inf_nan=False, description="how long one round's replies are awaited"
    )

    @model_validator(mode="after")
    def _robust_needs_sites(self) -> FederationSpec:
        if self.strategy == "multikrum" and self.min_sites is not None and self.min_sites < 2 * self.byzantine_sites + 3:
            raise ValueError(
                f"multikrum tolerating {self.byzantine_sites} hostile site(s) needs at least "
                f"{2 * self.byzantine_sites + 3} sites per round, but min_sites is {self.min_sites}"
            )
        if self.secure_aggregation.enabled:
            if self.strategy not in MEAN_BASED_STRATEGIES:
                raise ValueError(
                    f"strategy {self.strategy!r} must see every site's update, which secure aggregation hides; "
                    f"use one of {sorted(MEAN_BASED_STRATEGIES)} or turn secure_aggregation off"
                )
            if self.max_update_norm is None:
                raise ValueError(
                    "secure aggregation needs max_update_norm: the coordinator cannot check updates it "
                    "cannot see, so each site clips its own update to this L2 norm before masking"
                )
        return self

    @property
    def secagg_clipping_range(self) -> float:
        spec = self.secure_aggregation
        return spec.clipping_range if spec.clipping_range is not None else float(self.max_update_norm or 1.0)
