"""ε from a ledger with Opacus's accountants, replayed over every recorded step."""

from __future__ import annotations

from collections.abc import Sequence

from opacus.accountants import PRVAccountant, RDPAccountant

from fedneuro.privacy.ledger import LedgerEntry
from fedneuro.privacy.spec import AccountantName


def epsilon_from_history(
    history: Sequence[tuple[float, float, int]], *, delta: float, accountant: AccountantName
) -> float:
    """ε after composing ``history`` = [(noise_multiplier, sample_rate, steps), ...]."""
    steps = [(sigma, q, n) for sigma, q, n in history if n > 0]
    if not steps:
        return 0.0
    engine = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    engine.history = list(steps)
    return float(engine.get_epsilon(delta=delta))


def ledger_epsilon(
    entries: Sequence[LedgerEntry], *, delta: float, accountant: AccountantName
) -> float:
    return epsilon_from_history(
        [(e.noise_multiplier, e.sample_rate, e.steps) for e in entries],
        delta=delta,
        accountant=accountant,
    )
