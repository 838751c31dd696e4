"""The study's ``[privacy]`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PrivacyUnit = Literal["participant", "window"]
AccountantName = Literal["rdp", "prv"]
AccountantChoice = Literal["best", "rdp", "prv"]


class PrivacySpec(BaseModel):
    """DP-SGD parameters. Keyword names follow Opacus's ``make_private``."""

    model_config = ConfigDict(extra="forbid")

    noise_multiplier: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="σ: noise std / clipping norm")
    max_grad_norm: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="C: clipping norm of one unit's gradient")
    delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="δ of the reported (ε, δ); None = min(1e-5, 1/(10 × units at the site)). "
        "A site refuses a δ above 1/(10 × its units)",
    )
    unit: PrivacyUnit = Field(
        default="participant",
        description="the privacy unit: 'participant' (add/remove one participant's data) or "
        "'window' (one EEG window; weaker: a participant contributes many windows)",
    )
    max_windows_per_participant: int = Field(
        default=8,
        ge=1,
        le=4096,
        description="windows a sampled participant contributes to one step (their gradients "
        "are averaged, then clipped to C as one unit)",
    )
    accountant: AccountantChoice = Field(
        default="best",
        description="'best' reports the smaller of the RDP and PRV upper bounds (both valid); "
        "'rdp' or 'prv' forces one",
    )

    def neighbouring_relation(self) -> str:
        return (
            "add/remove all data of one participant"
            if self.unit == "participant"
            else "add/remove one window"
        )
