"""Empirical privacy audit: membership inference against a trained model.

A loss-threshold attack (Yeom et al. 2018): members of the training set tend to have lower
loss. Scores are per participant (mean loss over their windows), matching the privacy unit;
AUC 0.5 means the attacker cannot tell members from non-members.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score


class MembershipAudit(BaseModel):
    attack: str
    auc: float
    ci_low: float
    ci_high: float
    confidence: float
    n_members: int
    n_nonmembers: int
    n_bootstrap: int


def loss_threshold_audit(
    member_losses: np.ndarray,
    nonmember_losses: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> MembershipAudit:
    """AUC of 'lower loss => member', with a percentile bootstrap CI over participants."""
    members, nonmembers = np.asarray(member_losses, float), np.asarray(nonmember_losses, float)
    if len(members) < 2 or len(nonmembers) < 2:
        raise ValueError(
            f"a membership audit needs at least 2 members and 2 non-members, got {len(members)} and {len(nonmembers)}"
        )

    def auc(m: np.ndarray, n: np.ndarray) -> float:
        labels = np.r_[np.ones(len(m)), np.zeros(len(n))]
        return float(roc_auc_score(labels, -np.r_[m, n]))

    rng = np.random.default_rng(seed)
    samples = [
        auc(rng.choice(members, len(members)), rng.choice(nonmembers, len(nonmembers)))
        for _ in range(n_bootstrap)
    ]
    tail = (1 - confidence) / 2
    return MembershipAudit(
        attack="loss-threshold",
        auc=auc(members, nonmembers),
        ci_low=float(np.quantile(samples, tail)),
        ci_high=float(np.quantile(samples, 1 - tail)),
        confidence=confidence,
        n_members=len(members),
        n_nonmembers=len(nonmembers),
        n_bootstrap=n_bootstrap,
    )
