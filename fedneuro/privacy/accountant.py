"""ε from a ledger with Opacus's accountants, replayed over every recorded step.

Only upper bounds are reported: RDP, and PRV's upper estimate. Never GDP, whose CLT
approximation can fall below the true ε.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedneuro.privacy.ledger import LedgerEntry
from fedneuro.privacy.spec import AccountantChoice, AccountantName

logger = logging.getLogger(__name__)

History = Sequence[tuple[float, float, int]]


@dataclass(frozen=True)
class EpsilonReport:
    epsilon: float
    delta: float
    accountant: AccountantName
    by_accountant: dict[str, float]


PRV_MAX_RDP_EPSILON = 200.0


def _epsilon(history: History, delta: float, accountant: AccountantName) -> float:
    engine = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    engine.history = list(history)
    return float(engine.get_epsilon(delta=delta))


def compute_epsilon(history: History, *, delta: float, accountant: AccountantChoice) -> EpsilonReport:
    """ε after composing ``history`` = [(noise_multiplier, sample_rate, steps), ...]."""
    steps = [(float(s), float(q), int(n)) for s, q, n in history if n > 0]
    if not steps:
        return EpsilonReport(0.0, delta, "rdp" if accountant == "best" else accountant, {})
    names: list[AccountantName] = ["rdp", "prv"] if accountant == "best" else [accountant]
    values: dict[str, float] = {}
    if "prv" in names:
        # Opacus's PRV discretisation grows with the privacy loss: at σ = 0.1 (RDP ε in the
        # thousands) it took over 20 GB. Past PRV_MAX_RDP_EPSILON no guarantee is meaningful,
        # so the RDP upper bound is reported instead of risking the process.
        rdp = _epsilon(steps, delta, "rdp")
        if rdp > PRV_MAX_RDP_EPSILON:
            if accountant == "prv":
                raise ValueError(
                    f"ε is {rdp:.4g} by the RDP bound, beyond what the PRV accountant can compute in bounded "
                    f"memory (RDP ε ≤ {PRV_MAX_RDP_EPSILON:g}); use the rdp accountant, or raise the noise multiplier"
                )
            return EpsilonReport(rdp, delta, "rdp", {"rdp": rdp})
    for name in names:
        try:
            values[name] = _epsilon(steps, delta, name)
        except (ValueError, RuntimeError, OverflowError) as error:
            if accountant != "best":
                raise
            # PRV's discretisation fails for some extreme histories; RDP still bounds ε.
            logger.warning("PRV accountant failed (%s); reporting the RDP bound", error)
    best: AccountantName = min(values, key=values.__getitem__)  # type: ignore[assignment]
    return EpsilonReport(values[best], delta, best, values)


def epsilon_from_history(history: History, *, delta: float, accountant: AccountantChoice) -> float:
    return compute_epsilon(history, delta=delta, accountant=accountant).epsilon


def ledger_history(entries: Sequence[LedgerEntry]) -> list[tuple[float, float, int]]:
    return [(e.noise_multiplier, e.sample_rate, e.steps) for e in entries]


def ledger_epsilon(entries: Sequence[LedgerEntry], *, delta: float, accountant: AccountantChoice) -> float:
    return epsilon_from_history(ledger_history(entries), delta=delta, accountant=accountant)


def plan_noise_multiplier(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: AccountantName
) -> float:
    """Smallest σ (within 0.01 in ε) for which ``steps`` steps at rate ``sample_rate`` stay ≤ target."""
    if target_epsilon <= 0:
        raise ValueError(f"Invalid value for the 'epsilon' parameter: {target_epsilon}; it must be > 0")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"Invalid value for the 'sample_rate' parameter: {sample_rate}; it must be in (0, 1]")
    if steps < 1:
        raise ValueError(f"Invalid value for the 'steps' parameter: {steps}; it must be ≥ 1")
    if accountant == "prv" and target_epsilon > PRV_MAX_RDP_EPSILON:
        # The search would probe tiny σ, where PRV's memory is unbounded (see compute_epsilon).
        raise ValueError(f"Invalid value for the 'epsilon' parameter: {target_epsilon}; the prv accountant plans "
                         f"only up to ε = {PRV_MAX_RDP_EPSILON:g} (use rdp)")
    sigma = float(get_noise_multiplier(
        target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps,
        accountant=accountant, epsilon_tolerance=0.01,
    ))
    # get_noise_multiplier stops within a tolerance; make sure the claim holds.
    while _epsilon([(sigma, sample_rate, steps)], delta, accountant) > target_epsilon:
        sigma *= 1.01
    return sigma


def default_delta(n_units: int) -> float:
    """δ well below 1/n: the chance of a total failure must not cover a whole unit."""
    return min(1e-5, 1.0 / (10 * max(n_units, 1)))


def resolve_delta(requested: float | None, n_units: int) -> float:
    limit = 1.0 / (10 * max(n_units, 1))
    if requested is None:
        return default_delta(n_units)
    if requested > limit:
        raise ValueError(
            f"Invalid value for the 'delta' parameter: {requested:g} is above 1/(10 × {n_units} units) "
            f"= {limit:g}; such a δ allows leaking a unit's data outright. Lower [privacy] delta or leave it out"
        )
    return requested
