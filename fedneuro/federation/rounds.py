"""The coordinator's round loop: Flower's strategy hooks, with bounded waits and per-site reports.

Flower's ``Strategy.start`` runs the same hooks but waits for nodes without a bound, keeps no
per-site record of a round and cannot persist state between rounds; this loop calls the
strategy's ``configure_*``/``aggregate_*`` itself so every wait is bounded and every round
is reported (or fails loudly, never silently skipped).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedneuro.federation.codec import decode_arrays, encode_arrays, payload_bytes
from fedneuro.federation.spec import FederationSpec
from fedneuro.metrics import balanced_accuracy
from fedneuro.models.manifest import ExchangeError, TensorManifest

logger = logging.getLogger(__name__)

# What a plain train reply holds (client/site_work.py): anything else is refused, not aggregated.
TRAIN_RECORDS: dict[str, type] = {"arrays": ArrayRecord, "metrics": MetricRecord, "site": ConfigRecord}
TRAIN_METRICS = frozenset({"num-examples", "privacy-units", "train-loss", "dp-steps", "epsilon", "delta"})


class FederationError(RuntimeError):
    """A round or a study that could not complete."""


class FederationTimeout(FederationError):
    """A bounded wait ran out."""


@dataclass
class SiteRoundReport:
    site: str
    num_examples: int = 0
    privacy_units: int = 0
    epsilon: float = 0.0
    delta: float = 0.0
    epsilon_accountant: str = ""
    dp_steps: int = 0
    train_loss: float = float("nan")
    bytes_uploaded: int = 0
    balanced_accuracy: float = float("nan")
    test_windows: int = 0
    test_participants: int = 0


@dataclass
class RoundReport:
    round: int
    sites: dict[str, SiteRoundReport]
    balanced_accuracy: float
    participant_balanced_accuracy: float
    failures: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def wait_for_nodes(grid: Grid, count: int, *, timeout_s: float, poll_s: float = 0.5) -> list[int]:
    """Return node ids once ``count`` nodes are connected, or raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() >= deadline:
            raise FederationTimeout(
                f"only {len(nodes)} of {count} sites connected within {timeout_s:.0f} s: "
                "check that every site's client is running and can reach the coordinator, "
                "or lower [federation] min_sites"
            )
        time.sleep(poll_s)


def site_name(message: Message) -> str:
    if message.has_content():
        record = message.content.config_records.get("site")
        if record is not None and "name" in record:
            return str(record["name"])
    return f"node-{message.metadata.src_node_id}"


def error_reason(message: Message) -> str:
    """The site's own words from an error reply, without the runtime's wrapping and traceback."""
    reason = message.error.reason
    marker = "Message: "
    if marker in reason:
        reason = reason[reason.rindex(marker) + len(marker):]
    return " ".join(reason.split()).rstrip("'>")


def run_rounds(
    grid: Grid,
    strategy: Strategy,
    *,
    initial_arrays: ArrayRecord,
    manifest: TensorManifest,
    base_config: ConfigRecord,
    rounds: int,
    min_sites: int,
    connect_timeout_s: float,
    round_timeout_s: float,
    on_round_end: Callable[[RoundReport, ArrayRecord], None],
    max_update_norm: float | None = None,
    first_round: int = 1,
    federation: FederationSpec | None = None,
) -> ArrayRecord:
    """Train and evaluate ``rounds`` rounds; return the final global arrays.

    With ``federation.secure_aggregation.enabled`` the training half of each round runs
    Flower's SecAgg+ (the coordinator sees only the weighted mean update); otherwise each
    update is validated (manifest, shapes, dtypes, finite values, ``max_update_norm``)
    and the strategy aggregates the accepted ones.
    """
    arrays = initial_arrays
    for server_round in range(first_round, first_round + rounds):
        started = time.monotonic()
        wait_for_nodes(grid, min_sites, timeout_s=connect_timeout_s)
        reports: dict[str, SiteRoundReport] = {}
        failures: list[str] = []

        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(dict(base_config)), grid))
        if federation is not None and federation.secure_aggregation.enabled:
            to_aggregate, accepted = _secure_train(grid, messages, server_round, arrays, manifest, federation,
                                                   round_timeout_s, reports, failures)
        else:
            to_aggregate, accepted = _plain_train(grid, messages, arrays, manifest, max_update_norm,
                                                  round_timeout_s, reports, failures)
        for failure in failures:
            logger.warning("round %d: %s", server_round, failure)
        if accepted < min_sites:
            raise FederationError(
                f"round {server_round}: only {accepted} of the {min_sites} required sites "
                f"returned a valid update; failures: {failures or 'none (timed out)'}"
            )
        new_arrays, _ = strategy.aggregate_train(server_round, to_aggregate)
        if new_arrays is None:
            raise FederationError(f"round {server_round}: aggregation produced no model")
        arrays = conform_to_manifest(new_arrays, manifest)

        eval_replies = _send(grid, strategy.configure_evaluate(server_round, arrays, ConfigRecord(dict(base_config)), grid), round_timeout_s)
        window_confusions, participant_confusions = [], []
        n_classes = manifest.model.n_outputs if manifest.model is not None else None
        for reply in eval_replies:
            name = site_name(reply)
            if reply.has_error():
                failures.append(f"{name}: evaluate failed: {error_reason(reply)}")
                continue
            try:
                window_cm, participant_cm = (_confusion(reply, key, n_classes) for key in
                                             ("window-confusion", "participant-confusion"))
            except FederationError as error:
                failures.append(f"{name}: evaluation rejected: {error}")
                continue
            n_classes = window_cm.shape[0]
            window_confusions.append(window_cm)
            participant_confusions.append(participant_cm)
            report = reports.setdefault(name, SiteRoundReport(site=name))
            report.balanced_accuracy = balanced_accuracy(window_cm)
            report.test_windows = int(window_cm.sum())
            report.test_participants = int(participant_cm.sum())
        if not window_confusions:
            raise FederationError(f"round {server_round}: no site returned an evaluation; failures: {failures}")
        round_report = RoundReport(
            round=server_round,
            sites=reports,
            balanced_accuracy=balanced_accuracy(sum(window_confusions)),
            participant_balanced_accuracy=balanced_accuracy(sum(participant_confusions)),
            failures=failures,
            wall_time_s=time.monotonic() - started,
        )
        on_round_end(round_report, arrays)
    return arrays


def _plain_train(
    grid: Grid,
    messages: list[Message],
    arrays: ArrayRecord,
    manifest: TensorManifest,
    max_update_norm: float | None,
    timeout_s: float,
    reports: dict[str, SiteRoundReport],
    failures: list[str],
) -> tuple[list[Message], int]:
    """Send the round, validate each update; return the accepted replies and their count."""
    accepted: list[Message] = []
    for reply in _send(grid, messages, timeout_s):
        name = site_name(reply)
        if reply.has_error():
            failures.append(f"{name}: train failed: {error_reason(reply)}")
            continue
        problems = _train_reply_problems(reply.content)
        if problems:
            failures.append(f"{name}: update rejected: " + "; ".join(problems))
            continue
        site_record = reply.content.config_records.get("site")
        claimed = site_record.get("manifest-sha256") if site_record is not None else None
        if claimed != manifest.digest():
            failures.append(f"{name}: update rejected: it was trained for another model (manifest "
                            f"{str(claimed)[:12]}…, expected {manifest.digest()[:12]}…)")
            continue
        try:
            update = decode_arrays(reply.content["arrays"], manifest, source=f"update from {name}")
        except (ExchangeError, KeyError) as error:
            failures.append(f"{name}: update rejected: {error}")
            continue
        if max_update_norm is not None:
            distance = update_norm(update, decode_arrays(arrays))
            if distance > max_update_norm:
                failures.append(f"{name}: update rejected: its distance from the global model is "
                                f"{distance:.4g}, above max_update_norm {max_update_norm:g}")
                continue
        reports[name] = _site_report(name, reply.content["metrics"], str(reply.content["site"].get("epsilon-accountant", "")),
                                     payload_bytes(reply.content["arrays"]))
        accepted.append(reply)
    return accepted, len(accepted)


def _secure_train(
    grid: Grid,
    messages: list[Message],
    server_round: int,
    arrays: ArrayRecord,
    manifest: TensorManifest,
    federation: FederationSpec,
    timeout_s: float,
    reports: dict[str, SiteRoundReport],
    failures: list[str],
) -> tuple[list[Message], int]:
    """SecAgg+ over the strategy's sampled sites; the mean update becomes one reply for the
    strategy to aggregate (FedAvg keeps it, FedAdam/FedYogi take their server step from it)."""
    from fedneuro.federation.secure_round import SecureAggregationError, secure_train_round

    if not messages:
        raise FederationError("the strategy selected no site for this round")
    global_state = decode_arrays(arrays)
    try:
        result = secure_train_round(
            grid,
            node_ids=[m.metadata.dst_node_id for m in messages],
            server_round=server_round,
            global_state=global_state,
            config=dict(messages[0].content["config"]),
            manifest=manifest,
            federation=federation,
            timeout_s=timeout_s,
        )
    except SecureAggregationError as error:
        raise FederationError(f"round {server_round}: {error}") from error
    wrong_model = [str(m.get("site-name")) for m in result.site_metrics.values() if m.get("manifest-sha256") != manifest.digest()]
    if wrong_model:
        # Masked updates cannot be taken out of the sum: the whole round is unusable.
        raise FederationError(f"round {server_round}: {', '.join(wrong_model)} trained for another model "
                              f"(manifest differs from {manifest.digest()[:12]}…); the secure aggregate is discarded")
    for node, metrics in result.site_metrics.items():
        name = str(metrics.get("site-name", f"node-{node}"))
        reports[name] = _site_report(name, metrics, str(metrics.get("epsilon-accountant", "")), result.bytes_uploaded.get(node, 0))
    for node in result.dropped:
        failures.append(f"node-{node}: dropped out of the secure round; its masks were removed with the "
                        "other sites' shares and its update is not in the aggregate")
    new_state = {k: (global_state[k] + result.mean_update[k]).astype(global_state[k].dtype) for k in global_state}
    reply = Message(
        content=RecordDict({"arrays": encode_arrays(new_state), "metrics": MetricRecord({"num-examples": result.total_weight})}),
        dst_node_id=0,
        message_type=MessageType.TRAIN,
    )
    return [reply], len(result.site_metrics)


def _train_reply_problems(content: RecordDict) -> list[str]:
    """What makes a plain train reply unusable before its tensors are looked at: records other
    than arrays/metrics/site (Flower's aggregation would raise on them for every site), metric
    keys other than :data:`TRAIN_METRICS`, and a weight that is not a positive number."""
    problems = []
    unexpected = sorted(set(content.keys()) - set(TRAIN_RECORDS))
    if unexpected:
        problems.append(f"unexpected record(s) {unexpected}")
    for key, kind in TRAIN_RECORDS.items():
        if not isinstance(content.get(key), kind):
            problems.append(f"no {kind.__name__} {key!r}")
    metrics = content.get("metrics")
    if isinstance(metrics, MetricRecord):
        missing, extra = sorted(TRAIN_METRICS - set(metrics.keys())), sorted(set(metrics.keys()) - TRAIN_METRICS)
        if missing:
            problems.append(f"metrics lack {missing}")
        if extra:
            problems.append(f"metrics carry unexpected {extra} (a site sends only {sorted(TRAIN_METRICS)})")
        weight = metrics.get("num-examples")
        if "num-examples" in metrics and not (
            isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight) and weight > 0
        ):
            problems.append(f"num-examples is {weight!r}; a site's weight must be a positive number")
    return problems


def _confusion(reply: Message, key: str, n_classes: int | None) -> np.ndarray:
    """The ``key`` counts of an evaluation reply as an n x n matrix; FederationError when malformed."""
    metrics = reply.content.get("metrics")
    if not isinstance(metrics, MetricRecord) or key not in metrics:
        raise FederationError(f"the reply has no {key} metric")
    values = metrics[key]
    flat = np.asarray(values if isinstance(values, list) else [values], dtype=np.float64)
    size = n_classes if n_classes is not None else int(round(math.sqrt(flat.size)))
    if flat.size != size * size:
        raise FederationError(f"{key} has {flat.size} values, not a {size} x {size} confusion matrix")
    if not np.isfinite(flat).all() or np.any(flat != np.round(flat)):
        raise FederationError(f"{key} holds values that are not whole counts")
    if np.any(flat < 0):
        raise FederationError(f"{key} holds negative counts")
    return flat.astype(np.int64).reshape(size, size)


def _site_report(name: str, metrics: Mapping[str, object], accountant: str, uploaded: int) -> SiteRoundReport:
    return SiteRoundReport(
        site=name,
        num_examples=int(metrics["num-examples"]),  # type: ignore[call-overload]
        privacy_units=int(metrics["privacy-units"]),  # type: ignore[call-overload]
        epsilon=float(metrics["epsilon"]),  # type: ignore[arg-type]
        delta=float(metrics["delta"]),  # type: ignore[arg-type]
        epsilon_accountant=accountant,
        dp_steps=int(metrics["dp-steps"]),  # type: ignore[call-overload]
        train_loss=float(metrics["train-loss"]),  # type: ignore[arg-type]
        bytes_uploaded=uploaded,
    )


def conform_to_manifest(record: ArrayRecord, manifest: TensorManifest) -> ArrayRecord:
    """The aggregate in the manifest's dtypes (server optimisers such as FedAdam compute in
    float64), checked against the manifest before it is sent anywhere."""
    dtypes = {t.name: np.dtype(t.dtype) for t in manifest.tensors}
    state = {name: np.asarray(value).astype(dtypes[name], copy=False) for name, value in decode_arrays(record).items() if name in dtypes}
    manifest.check(state, source="aggregated model")
    return encode_arrays(state)


def update_norm(update: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """L2 norm of ``update - reference`` over every exchanged tensor."""
    return float(np.sqrt(sum(float(np.sum((update[k].astype(np.float64) - reference[k]) ** 2)) for k in reference)))


def _send(grid: Grid, messages: object, timeout_s: float) -> list[Message]:
    messages = list(messages)  # type: ignore[call-overload]
    if not messages:
        raise FederationError("the strategy selected no site for this round")
    replies = list(grid.send_and_receive(messages, timeout=timeout_s))
    missing = len(messages) - len(replies)
    if missing:
        logger.warning("%d of %d sites did not answer within %.0f s", missing, len(messages), timeout_s)
    return replies

