"""What a site allows. The site owns this; nothing in it comes from the coordinator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SitePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_epsilon_per_study: float = Field(
        default=10.0, gt=0, description="ε this site may spend on one study, over all its rounds"
    )
    max_epsilon_lifetime: float | None = Field(
        default=None, gt=0, description="ε over every study at this site (same participants); None = no limit"
    )

    require_secure_aggregation: bool = Field(
        default=False,
        description="train only in rounds whose update is masked with secure aggregation "
        "(the coordinator then sees only the sum over sites)",
    )

    @model_validator(mode="after")
    def _lifetime_covers_a_study(self) -> SitePolicy:
        if self.max_epsilon_lifetime is not None and self.max_epsilon_lifetime < self.max_epsilon_per_study:
            raise ValueError(
                f"max_epsilon_lifetime ({self.max_epsilon_lifetime}) is below max_epsilon_per_study "
                f"({self.max_epsilon_per_study}); lower the per-study budget or raise the lifetime one"
            )
        return self
