"""The study's ``[privacy]`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PrivacyUnit = Literal["window"]
AccountantName = Literal["rdp", "prv"]


class PrivacySpec(BaseModel):
    """DP-SGD parameters. Keyword names follow Opacus's ``make_private``."""

    model_config = ConfigDict(extra="forbid")

    noise_multiplier: float = Field(default=1.0, gt=0, description="σ: noise std / clipping norm")
    max_grad_norm: float = Field(default=1.0, gt=0, description="C: per-sample clipping norm")
    delta: float = Field(default=1e-5, gt=0, lt=1, description="δ of the reported (ε, δ)")
    unit: PrivacyUnit = Field(
        default="window",
        description="the privacy unit: 'window' protects one EEG window, NOT a participant "
        "(participant-level DP is planned; reports state the unit)",
    )
    accountant: AccountantName = Field(default="rdp", description="accountant for ε")
