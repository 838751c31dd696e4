"""DP-SGD steps, the durable ledger and cumulative ε."""

from __future__ import annotations

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from fedneuro.models.adapters import build_model
from fedneuro.models.exchange import trainable_state
from fedneuro.models.spec import ModelSpec
from fedneuro.privacy.accountant import epsilon_from_history, ledger_epsilon
from fedneuro.privacy.ledger import LedgerEntry, LedgerError, PrivacyLedger
from fedneuro.privacy.spec import PrivacySpec
from fedneuro.training.local import train_dp
from fedneuro.training.spec import TrainingSpec


def _data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 19, 800)).astype(np.float32), rng.integers(0, 2, n)


def _entry(round_: int, steps: int, q: float = 0.1, sigma: float = 1.0) -> LedgerEntry:
    return LedgerEntry(study_id="s", round=round_, noise_multiplier=sigma, sample_rate=q, steps=steps,
                       max_grad_norm=1.0, unit="window", recorded_at="2026-11-24T00:00:00+00:00")


def test_dp_step_moves_every_adapter_tensor_and_records_steps() -> None:
    model = build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=0)
    before = trainable_state(model.module)
    X, y = _data()
    result = train_dp(model.module, X, y, training=TrainingSpec(batch_size=16), privacy=PrivacySpec(),
                      sampling_seed=1, noise_seed=2)
    after = trainable_state(model.module)
    assert all(not np.array_equal(before[k], after[k]) for k in before)  # Opacus #820 guard
    assert result.steps == 6 and result.dp_history[0].sample_rate == pytest.approx(1 / 6)


def test_dp_training_is_deterministic_by_seed_and_noise_differs_by_seed() -> None:
    X, y = _data()
    runs = []
    for noise_seed in (2, 2, 3):
        model = build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=0)
        train_dp(model.module, X, y, training=TrainingSpec(batch_size=16), privacy=PrivacySpec(),
                 sampling_seed=1, noise_seed=noise_seed)
        runs.append(trainable_state(model.module))
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_empty_poisson_batches_are_noised_and_counted() -> None:
    model = build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=0)
    X, y = _data(n=30)
    result = train_dp(model.module, X, y, training=TrainingSpec(batch_size=1), privacy=PrivacySpec(),
                      sampling_seed=4, noise_seed=5)
    assert result.empty_batches > 0
    assert result.steps == 30  # every step, empty or not, is accounted


def test_epsilon_is_cumulative_across_rounds_via_the_ledger(tmp_path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl")
    X, y = _data()
    model = build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=0)
    epsilons = []
    for round_ in (1, 2):
        result = train_dp(model.module, X, y, training=TrainingSpec(batch_size=16), privacy=PrivacySpec(),
                          sampling_seed=round_, noise_seed=10 + round_)
        ledger.append([_entry(round_, h.steps, h.sample_rate, h.noise_multiplier) for h in result.dp_history])
        # A fresh ledger object: the state survives the process, not just the object.
        epsilons.append(ledger_epsilon(PrivacyLedger(ledger.path).entries("s"), delta=1e-5, accountant="rdp"))
    assert 0 < epsilons[0] < epsilons[1]
    independent = RDPAccountant()
    for _ in range(12):
        independent.step(noise_multiplier=1.0, sample_rate=1 / 6)
    assert epsilons[1] == pytest.approx(independent.get_epsilon(delta=1e-5), rel=1e-9)


def test_prv_is_not_above_rdp_and_zero_steps_give_zero() -> None:
    history = [(1.0, 0.05, 200)]
    rdp = epsilon_from_history(history, delta=1e-5, accountant="rdp")
    prv = epsilon_from_history(history, delta=1e-5, accountant="prv")
    assert 0 < prv <= rdp
    assert epsilon_from_history([], delta=1e-5, accountant="rdp") == 0.0


def test_ledger_filters_by_study_and_refuses_a_corrupt_line(tmp_path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl")
    ledger.append([_entry(1, 5), _entry(2, 5).model_copy(update={"study_id": "other"})])
    assert [e.round for e in ledger.entries("s")] == [1]
    with ledger.path.open("a") as handle:
        handle.write('{"study_id": "s", "round": 3, "noise_mul')
    with pytest.raises(LedgerError, match=r"ledger\.jsonl, line 3 is unreadable"):
        ledger.entries("s")
