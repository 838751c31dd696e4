"""Federation costs, measured side by side in one run (issue 6).

    python benchmarks/federation.py [--participants 24] [--rounds 3] [--json]

1. Round wall time / slowest site's local training time, with and without secure aggregation
   (Flower's SecAgg+), 3 sites training concurrently (one thread each) through the real
   ClientApp in this process; rounds after the first (warm caches) are timed.
2. Aggregation of 100 updates × 1e6 float32 by Flower's FedAvg (what the coordinator runs)
   vs an in-place numpy weighted sum over the same arrays.
3. Bytes a site uploads per round, plain vs secure (masked int64 vectors plus key exchange).

Deployment adds a process start per message on top (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _site_dirs(root: Path, participants: int) -> dict[str, Path]:
    from fedneuro.data.synth import synthesize_consortium

    return dict(synthesize_consortium(root / "data", n_sites=3, participants_per_site=participants, duration_s=30.0, seed=0))


class ThreadedGrid:
    """The real ClientApp of each site, called concurrently (a thread per site), timing each call."""

    def __init__(self, configs: dict[int, Path]) -> None:
        from flwr.app import Context, RecordDict

        self.contexts = {n: Context(run_id=1, node_id=n, node_config={"site-config": str(p)}, state=RecordDict(), run_config={})
                         for n, p in configs.items()}
        self.train_times: list[float] = []  # per site-call of a train handler (plain or masking stage)
        self.lock = threading.Lock()

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        import copy

        from client.app import app

        def call(message):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            reply = app(copy.deepcopy(message), self.contexts[message.metadata.dst_node_id])
            trains = message.metadata.message_type == "train" and (
                "arrays" in message.content.array_records or "fitins.parameters" in message.content.array_records)
            if trains:
                with self.lock:
                    self.train_times.append(time.perf_counter() - started)
            return reply

        messages = list(messages)
        with ThreadPoolExecutor(len(messages)) as pool:
            return list(pool.map(call, messages))


def _round_overhead(sites: dict[str, Path], root: Path, rounds: int, secure: bool) -> dict[str, float]:
    import torch
    from flwr.app import ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    from fedneuro.federation.codec import encode_arrays
    from fedneuro.federation.rounds import run_rounds
    from fedneuro.federation.strategies import build_strategy
    from fedneuro.governance.consent import import_consent_file
    from fedneuro.models.exchange import exchange_manifest, trainable_state
    from fedneuro.study import default_study_path, load_study
    from fedneuro.training.site import build_study_model

    torch.set_num_threads(1)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    base = load_study(default_study_path())
    federation = base.federation.model_copy(update={"secure_aggregation": base.federation.secure_aggregation.model_copy(
        update={"enabled": secure})})
    # Small benchmark sites: lower the demo's cohort floors; consents imported as a site would.
    governance = base.governance.model_copy(update={"min_cohort": 3, "min_participants_per_metric": 2})
    study = base.model_copy(update={"federation": federation, "governance": governance})
    configs = {}
    for node, (name, bids) in enumerate(sites.items(), start=1):
        path = root / f"{'secure' if secure else 'plain'}-{name}.json"
        state_dir = root / ("secure" if secure else "plain") / name
        import_consent_file(state_dir, bids / "participants.tsv")
        path.write_text(json.dumps({"name": name, "bids_root": str(bids), "device": "cpu", "state_dir": str(state_dir),
                                    "noise_seed": node, "policy": {"accepted_purposes": ["HMB"]}}))
        configs[node] = path
    model = build_study_model(study)
    manifest = exchange_manifest(model)
    grid = ThreadedGrid(configs)
    per_round: list[tuple[float, float, int]] = []

    def on_round_end(report, arrays):  # type: ignore[no-untyped-def]
        per_round.append((report.wall_time_s, max(grid.train_times), max(s.bytes_uploaded for s in report.sites.values())))
        grid.train_times.clear()

    run_rounds(grid, build_strategy(study.federation, min_sites=3), initial_arrays=encode_arrays(trainable_state(model.module)),
               manifest=manifest, base_config=ConfigRecord({"study": study.to_json(), "manifest": manifest.to_json()}),
               rounds=rounds, min_sites=3, connect_timeout_s=5, round_timeout_s=600,
               max_update_norm=study.federation.max_update_norm, federation=study.federation, on_round_end=on_round_end)
    warm = per_round[1:] or per_round
    return {"round_s": statistics.median(r[0] for r in warm), "slowest_site_train_s": statistics.median(r[1] for r in warm),
            "ratio": statistics.median(r[0] / r[1] for r in warm), "bytes_per_site": float(warm[-1][2]),
            "adapter_bytes": float(manifest.nbytes)}


def _aggregation(n_updates: int, size: int, repeats: int) -> dict[str, float]:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.serverapp.strategy import FedAvg

    from fedneuro.federation.codec import encode_arrays

    rng = np.random.default_rng(0)
    updates = [rng.standard_normal(size, dtype=np.float32) for _ in range(n_updates)]
    weights = rng.integers(50, 500, n_updates).astype(np.float64)
    replies = [Message(content=RecordDict({"arrays": encode_arrays({"w": u}), "metrics": MetricRecord({"num-examples": int(w)})}),
                       dst_node_id=0, message_type=MessageType.TRAIN) for u, w in zip(updates, weights, strict=True)]
    strategy = FedAvg(min_train_nodes=1, min_available_nodes=1, min_evaluate_nodes=1)
    flower, numpy_sum = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        aggregate, _ = strategy.aggregate_train(1, replies)
        flower.append(time.perf_counter() - started)
        started = time.perf_counter()
        acc = np.zeros(size, dtype=np.float64)
        for u, w in zip(updates, weights / weights.sum(), strict=True):
            acc += w * u  # in place; float64 accumulation like Flower's
        numpy_sum.append(time.perf_counter() - started)
    assert isinstance(aggregate, ArrayRecord)
    np.testing.assert_allclose(aggregate["w"].numpy(), acc, rtol=1e-4, atol=1e-5)
    return {"flower_fedavg_s": statistics.median(flower), "numpy_inplace_s": statistics.median(numpy_sum),
            "ratio": statistics.median(flower) / statistics.median(numpy_sum)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=24, help="synthetic participants per site")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setting (the first is not timed)")
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sites = _site_dirs(root, args.participants)
        plain = _round_overhead(sites, root, args.rounds, secure=False)
        secure = _round_overhead(sites, root, args.rounds, secure=True)
    aggregation = _aggregation(args.updates, args.size, args.repeats)
    result = {"round_over_slowest_training": {"plain": plain, "secure": secure},
              "secure_over_plain_round": secure["round_s"] / plain["round_s"],
              "aggregation_100x1e6": aggregation,
              "bytes_per_site_per_round": {"plain": plain["bytes_per_site"], "secure": secure["bytes_per_site"],
                                           "expansion": secure["bytes_per_site"] / plain["bytes_per_site"]}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"round / slowest site's training: plain {plain['ratio']:.2f}×, secure aggregation {secure['ratio']:.2f}× "
          f"(goal ≤ 1.3×); rounds {plain['round_s']:.1f} s vs {secure['round_s']:.1f} s")
    print(f"aggregation of {args.updates} × {args.size:.0e} float32: Flower FedAvg {aggregation['flower_fedavg_s']:.2f} s, "
          f"numpy in-place {aggregation['numpy_inplace_s']:.2f} s → {aggregation['ratio']:.2f}× (goal ≤ 2×)")
    b = result["bytes_per_site_per_round"]
    print(f"bytes up per site per round: plain {b['plain']:,.0f}, secure {b['secure']:,.0f} ({b['expansion']:.2f}×; "
          f"adapter {plain['adapter_bytes']:,.0f} B)")


if __name__ == "__main__":
    main()
