"""The study's strategy as one of Flower's Message-API strategies (a name → class registry)."""

from __future__ import annotations

from collections.abc import Callable

from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedTrimmedAvg, FedYogi, MultiKrum, Strategy

from fedneuro.federation.spec import FederationSpec, StrategyName


def _common(n: int) -> dict[str, int]:
    return {"min_train_nodes": n, "min_evaluate_nodes": n, "min_available_nodes": n}


_BUILDERS: dict[StrategyName, Callable[[FederationSpec, int], Strategy]] = {
    "fedavg": lambda spec, n: FedAvg(**_common(n)),
    # Flower's FedProx only sends proximal-mu; the sites add the proximal term themselves.
    "fedprox": lambda spec, n: FedProx(**_common(n), proximal_mu=spec.proximal_mu),
    "fedadam": lambda spec, n: FedAdam(**_common(n), eta=spec.server_learning_rate),
    "fedyogi": lambda spec, n: FedYogi(**_common(n), eta=spec.server_learning_rate),
    "trimmed-mean": lambda spec, n: FedTrimmedAvg(**_common(n), beta=spec.trim_fraction),
    "multikrum": lambda spec, n: MultiKrum(
        **_common(n), num_malicious_nodes=spec.byzantine_sites, num_nodes_to_select=max(1, n - spec.byzantine_sites)
    ),
}


def build_strategy(spec: FederationSpec, *, min_sites: int) -> Strategy:
    return _BUILDERS[spec.strategy](spec, min_sites)


def registered_strategies() -> list[str]:
    return sorted(_BUILDERS)
