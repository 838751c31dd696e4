"""The coordinator's half of secure aggregation: one training round through Flower's SecAgg+.

Flower 1.42 runs SecAgg+ only inside its legacy workflow stack (``LegacyContext`` + a legacy
``Strategy``). This module drives ``SecAggPlusWorkflow`` for a single round from our own
Message-API round loop: a one-round legacy strategy hands it the global model and receives the
unmasked *mean* update, which is all the coordinator ever learns. Flower's workflow only logs
"Secure aggregation halted" when a stage fails; here a failed stage raises, so a secure round
is never silently skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, FitRes, Parameters, parameters_to_ndarrays
from flwr.common.serde import recorddict_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from fedneuro.federation.codec import decode_ordered
from fedneuro.federation.secure_client import ordered_parameters
from fedneuro.federation.spec import FederationSpec
from fedneuro.models.manifest import TensorManifest

logger = logging.getLogger(__name__)

STAGES = ("setup", "share-keys", "collect-masked-vectors", "unmask")


class SecureAggregationError(RuntimeError):
    """A secure round that could not complete (too few sites left to unmask, a stage failed)."""


@dataclass
class SecureRoundResult:
    mean_update: dict[str, np.ndarray]
    total_weight: int
    site_metrics: dict[int, dict[str, object]]  # node id -> the site's aggregate metrics
    bytes_uploaded: dict[int, int]  # node id -> bytes of every reply in all four stages
    dropped: list[int] = field(default_factory=list)  # sampled node ids that did not finish


class _OneRound(LegacyStrategy):
    """The legacy strategy SecAgg+ calls: hands out the global model, receives the mean."""

    def __init__(self, fit_ins: FitIns) -> None:
        self.fit_ins = fit_ins
        self.aggregate: Parameters | None = None
        self.results: list[tuple[ClientProxy, FitRes]] = []

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        return [(proxy, self.fit_ins) for proxy in client_manager.all().values()]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: object) -> tuple[Parameters | None, dict]:
        # SecAgg+ has already replaced every result's parameters by the unmasked weighted mean.
        self.results = results
        self.aggregate = results[0][1].parameters if results else None
        return self.aggregate, {}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: object) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


class _CheckedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, raising (not logging) when a stage cannot go on.

    Also fixes a dropout case of Flower 1.42's workflow: a site lost before it shared its key
    shares stayed in the sampled set, so at unmasking every survivor was asked for a share of
    its secret it never received (``KeyError`` in ``secaggplus_mod._unmask``) and the round
    failed. Such a site added no masks to anyone's vector, so it simply leaves the protocol.
    """

    def __call__(self, grid: Grid, context: Context) -> None:
        state = WorkflowState()
        steps = (self.setup_stage, self.share_keys_stage, self.collect_masked_vectors_stage, self.unmask_stage)
        for index, (name, step) in enumerate(zip(STAGES, steps, strict=True)):
            ok = step(grid, context, state)  # type: ignore[arg-type]
            if ok and index < 2:
                state.sampled_node_ids = set(state.active_node_ids)
            if not ok:
                reasons = "; ".join(str(f) for f in state.failures) or "no site error was reported (timed out?)"
                raise SecureAggregationError(
                    f"secure aggregation failed at stage '{name}': {len(state.active_node_ids)} of "
                    f"{len(state.sampled_node_ids) or len(state.nid_to_fitins)} sites still active, each site needs "
                    f"{state.threshold} live share holders to unmask; site errors: {reasons}"
                )


class _MeteredGrid:
    """The round's Grid, counting what each site sends (masked vectors included)."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.bytes_uploaded: dict[int, int] = {}
        self.finished: set[int] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.finished = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_content():
                size = recorddict_to_proto(reply.content).ByteSize()
                self.bytes_uploaded[node] = self.bytes_uploaded.get(node, 0) + size
                self.finished.add(node)
        return replies


def secure_train_round(
    grid: Grid,
    *,
    node_ids: Iterable[int],
    server_round: int,
    global_state: Mapping[str, np.ndarray],
    config: Mapping[str, object],
    manifest: TensorManifest,
    federation: FederationSpec,
    timeout_s: float,
) -> SecureRoundResult:
    """Run SecAgg+ over ``node_ids``; return the unmasked weighted mean of their updates."""
    spec = federation.secure_aggregation
    nodes = sorted(set(node_ids))
    if len(nodes) * spec.quantization_range >= spec.modulus_range:
        # The masked sum would wrap around the modulus and decode to garbage.
        raise SecureAggregationError(
            f"{len(nodes)} sites × quantization_range {spec.quantization_range} reaches modulus_range "
            f"{spec.modulus_range}: lower [federation.secure_aggregation] quantization_range"
        )
    fit_ins = FitIns(parameters=ordered_parameters(global_state, manifest), config=dict(config))  # type: ignore[arg-type]
    strategy = _OneRound(fit_ins)
    clients = SimpleClientManager()
    for node in nodes:
        clients.register(GridClientProxy(node, grid, run_id=0))
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        strategy=strategy,
        client_manager=clients,
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(fit_ins.parameters, keep_input=True)
    workflow = _CheckedSecAggPlus(
        num_shares=spec.num_shares,
        reconstruction_threshold=spec.reconstruction_threshold,
        max_weight=spec.max_weight,
        clipping_range=federation.secagg_clipping_range,
        quantization_range=spec.quantization_range,
        modulus_range=spec.modulus_range,
        timeout=timeout_s,
    )
    metered = _MeteredGrid(grid)
    workflow(metered, context)  # type: ignore[arg-type]
    if strategy.aggregate is None:
        raise SecureAggregationError(f"round {server_round}: secure aggregation ended without an aggregate")
    mean = decode_ordered(parameters_to_ndarrays(strategy.aggregate), _float64(manifest), source="secure aggregate")
    site_metrics = {
        int(proxy.node_id): {**res.metrics, "num-examples": int(res.num_examples)}  # type: ignore[attr-defined]
        for proxy, res in strategy.results
    }
    total = sum(int(res.num_examples) for _, res in strategy.results)
    finished = set(site_metrics)
    return SecureRoundResult(
        mean_update=mean,
        total_weight=total,
        site_metrics=site_metrics,
        bytes_uploaded=metered.bytes_uploaded,
        dropped=[n for n in nodes if n not in finished],
    )


def _float64(manifest: TensorManifest) -> TensorManifest:
    """The manifest with float64 tensors: SecAgg+ dequantises in float64."""
    return manifest.model_copy(update={"tensors": [t.model_copy(update={"dtype": "float64"}) for t in manifest.tensors]})
