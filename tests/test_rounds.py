"""The coordinator's round loop with the real ClientApp in-process (no Ray): aggregation,
rejection of updates built for another model, bounded waits."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from inprocess_grid import InProcessGrid
from sites import small_cohort, write_site_config

from fedneuro.federation.codec import decode_arrays, encode_arrays
from fedneuro.federation.rounds import FederationError, FederationTimeout, run_rounds
from fedneuro.models.exchange import exchange_manifest, trainable_state
from fedneuro.study import default_study_path, load_study
from fedneuro.training.site import build_study_model


def _tampering(nodes: set[int]):
    def tamper(node: int, reply: Message) -> None:
        if node in nodes and "site" in reply.content:
            reply.content["site"]["manifest-sha256"] = "0" * 64
    return tamper


@pytest.fixture()
def setup(tmp_path: Path, data_consortium):
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    base = load_study(default_study_path())
    study = small_cohort(base.model_copy(update={"model": base.model.model_copy(update={"backbone": "biot-tiny"})}))
    configs = {}
    for node, (name, root) in enumerate(list(data_consortium.items())[:2], start=1):
        configs[node] = write_site_config(tmp_path, name, root, noise_seed=node)
    model = build_study_model(study)
    manifest = exchange_manifest(model)
    kwargs = dict(
        initial_arrays=encode_arrays(trainable_state(model.module)),
        manifest=manifest,
        base_config=ConfigRecord({"study": study.to_json(), "manifest": manifest.to_json()}),
        rounds=1, min_sites=2, connect_timeout_s=1.0, round_timeout_s=60.0,
    )
    return configs, kwargs


def _strategy() -> FedAvg:
    return FedAvg(min_train_nodes=2, min_evaluate_nodes=2, min_available_nodes=2)


def test_one_round_aggregates_the_weighted_mean_and_reports_every_site(setup) -> None:
    configs, kwargs = setup
    grid = InProcessGrid(configs)
    reports = []
    final = run_rounds(grid, _strategy(), on_round_end=lambda r, a: reports.append(r), **kwargs)
    updates = [(decode_arrays(r.content["arrays"]), r.content["metrics"]["num-examples"]) for r in grid.replies[0]]
    total = sum(w for _, w in updates)
    expected = {k: sum(s[k] * w for s, w in updates) / total for k in updates[0][0]}
    got = decode_arrays(final)
    assert all(np.allclose(got[k], expected[k], atol=1e-6) for k in expected)
    (report,) = reports
    assert set(report.sites) == {"hospital-a", "hospital-b"} and report.failures == []
    assert all(s.epsilon > 0 and s.bytes_uploaded > 0 and s.test_windows > 0 for s in report.sites.values())


def test_an_update_for_another_model_is_rejected_and_the_round_fails_loudly(setup) -> None:
    configs, kwargs = setup
    with pytest.raises(FederationError, match=r"only 1 of the 2 required sites .*trained for another model"):
        run_rounds(InProcessGrid(configs, tamper=_tampering({2})), _strategy(), on_round_end=lambda r, a: None, **kwargs)


def test_the_wait_for_sites_is_bounded(setup) -> None:
    configs, kwargs = setup
    with pytest.raises(FederationTimeout, match="only 1 of 2 sites connected within 1 s"):
        run_rounds(InProcessGrid({1: configs[1]}), _strategy(), on_round_end=lambda r, a: None, **kwargs)


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam", "fedyogi", "trimmed-mean", "multikrum"])
def test_every_strategy_runs_a_round_over_adapter_tensors(setup, strategy: str) -> None:
    from fedneuro.federation.spec import FederationSpec
    from fedneuro.federation.strategies import build_strategy, registered_strategies

    assert strategy in registered_strategies()
    configs, kwargs = setup
    spec = FederationSpec(strategy=strategy, byzantine_sites=0, proximal_mu=0.5)
    grid = InProcessGrid(configs)
    final = run_rounds(grid, build_strategy(spec, min_sites=2), on_round_end=lambda r, a: None, **kwargs)
    initial = decode_arrays(kwargs["initial_arrays"])
    moved = decode_arrays(final)
    assert set(moved) == set(initial) and any(not np.allclose(moved[k], initial[k]) for k in initial)
    sent = grid.replies[0][0]
    assert sent.content["metrics"]["epsilon"] > 0


def test_fedprox_sends_mu_and_the_site_stays_closer_to_the_global_model(setup) -> None:
    from fedneuro.federation.strategies import build_strategy
    from fedneuro.federation.spec import FederationSpec
    from fedneuro.federation.rounds import update_norm

    configs, kwargs = setup
    distances = {}
    for mu in (0.0, 5.0):
        grid = InProcessGrid({1: configs[1], 2: configs[2]})
        strategy = build_strategy(FederationSpec(strategy="fedprox", proximal_mu=mu), min_sites=2)
        run_rounds(grid, strategy, on_round_end=lambda r, a: None, **kwargs)
        distances[mu] = update_norm(decode_arrays(grid.replies[0][0].content["arrays"]), decode_arrays(kwargs["initial_arrays"]))
    assert distances[5.0] < distances[0.0]


def test_an_update_beyond_the_norm_bound_is_rejected_and_named(setup) -> None:
    configs, kwargs = setup
    reports = []
    with pytest.raises(FederationError, match=r"hospital-\w: update rejected: its distance from the global model is .* above max_update_norm 1e-06"):
        run_rounds(InProcessGrid(configs), _strategy(), on_round_end=lambda r, a: reports.append(r),
                   max_update_norm=1e-6, **kwargs)
    # With one site allowed to fail, the round proceeds with the other and records the rejection.
    configs3 = dict(configs)
    kwargs1 = {**kwargs, "min_sites": 1}
    run_rounds(InProcessGrid(configs3), FedAvg(min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1),
               on_round_end=lambda r, a: reports.append(r), max_update_norm=1e9, **kwargs1)
    assert reports[-1].failures == []


def test_a_resumed_study_ends_with_the_same_adapter_as_an_uninterrupted_one(setup, tmp_path) -> None:
    from fedneuro.federation.checkpoint import (
        CheckpointError,
        load_checkpoint,
        restore_random_state,
        restore_strategy,
        save_checkpoint,
    )
    from fedneuro.federation.spec import FederationSpec
    from fedneuro.federation.strategies import build_strategy

    configs, kwargs = setup
    spec = FederationSpec(strategy="fedadam")  # carries optimiser state between rounds
    manifest = kwargs["manifest"]

    def fresh_sites(name: str) -> dict[int, Path]:
        # New state dirs: each run's sites start with empty ledgers, as at a real fresh start.
        out = {}
        for node, path in configs.items():
            site = json.loads(path.read_text())
            out[node] = write_site_config(tmp_path / name, site["name"], Path(site["bids_root"]), noise_seed=site["noise_seed"])
        return out

    straight = run_rounds(InProcessGrid(fresh_sites("straight")), build_strategy(spec, min_sites=2),
                          on_round_end=lambda r, a: None, **{**kwargs, "rounds": 2})

    sites = fresh_sites("interrupted")
    first = build_strategy(spec, min_sites=2)

    def checkpoint(report, arrays) -> None:  # what the ServerApp does after every round
        save_checkpoint(tmp_path / "ckpt", study_id="s", study_digest="d", manifest_digest=manifest.digest(),
                        completed_round=report.round, rounds=[], arrays=decode_arrays(arrays), strategy=first)

    run_rounds(InProcessGrid(sites), first, on_round_end=checkpoint, **{**kwargs, "rounds": 1})
    state, arrays, strategy_state = load_checkpoint(tmp_path / "ckpt", study_digest="d", manifest_digest=manifest.digest())
    assert state.completed_round == 1 and set(strategy_state) == {"m_t", "v_t"}
    second = build_strategy(spec, min_sites=2)  # a new coordinator process
    restore_strategy(second, strategy_state)
    restore_random_state(state)
    resumed = run_rounds(InProcessGrid(sites), second, on_round_end=lambda r, a: None,
                         **{**kwargs, "rounds": 1, "initial_arrays": encode_arrays(arrays)}, first_round=2)
    a, b = decode_arrays(straight), decode_arrays(resumed)
    assert all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)

    with pytest.raises(CheckpointError, match="another version of study"):
        load_checkpoint(tmp_path / "ckpt", study_digest="other", manifest_digest=manifest.digest())
    (tmp_path / "ckpt" / "arrays.safetensors").write_bytes(b"torn write")
    with pytest.raises(CheckpointError, match="does not match .*state.json"):
        load_checkpoint(tmp_path / "ckpt", study_digest="d", manifest_digest=manifest.digest())
