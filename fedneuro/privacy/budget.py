"""Budget enforcement: a site never spends more ε than its policy allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedneuro.privacy.accountant import compute_epsilon, ledger_history
from fedneuro.privacy.ledger import LedgerEntry
from fedneuro.privacy.spec import AccountantChoice


class BudgetExceeded(RuntimeError):
    """Training this round would take the site past its privacy budget."""


@dataclass(frozen=True)
class BudgetCheck:
    epsilon_spent: float
    epsilon_after_round: float
    max_epsilon: float
    lifetime_epsilon_after_round: float | None
    max_lifetime_epsilon: float | None


def check_round_budget(
    *,
    site: str,
    study_id: str,
    server_round: int,
    study_entries: Sequence[LedgerEntry],
    all_entries: Sequence[LedgerEntry],
    planned: tuple[float, float, int],
    delta: float,
    accountant: AccountantChoice,
    max_epsilon: float,
    max_lifetime_epsilon: float | None,
) -> BudgetCheck:
    """ε before and after the planned round; raises BudgetExceeded before any training."""
    spent = compute_epsilon(ledger_history(study_entries), delta=delta, accountant=accountant).epsilon
    after = compute_epsilon([*ledger_history(study_entries), planned], delta=delta, accountant=accountant)
    if after.epsilon > max_epsilon:
        raise BudgetExceeded(
            f"site {site} refuses round {server_round} of study {study_id}: it would bring ε to "
            f"{after.epsilon:.3f} (δ={delta:g}, {after.accountant}), above the site's budget of "
            f"{max_epsilon:g} per study (spent so far: {spent:.3f}). No training was done."
        )
    lifetime = None
    if max_lifetime_epsilon is not None:
        # Every study at this site used the same participants: their losses compose.
        lifetime = compute_epsilon([*ledger_history(all_entries), planned], delta=delta, accountant=accountant).epsilon
        if lifetime > max_lifetime_epsilon:
            raise BudgetExceeded(
                f"site {site} refuses round {server_round} of study {study_id}: its lifetime ε over "
                f"all studies would reach {lifetime:.3f}, above the site's lifetime budget of "
                f"{max_lifetime_epsilon:g}. No training was done."
            )
    return BudgetCheck(spent, after.epsilon, max_epsilon, lifetime, max_lifetime_epsilon)
