"""Participant-level DP-SGD, the durable ledger, cumulative ε, budgets and planning."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting import pld, rdp

from fedneuro.models.adapters import build_model
from fedneuro.models.exchange import trainable_state
from fedneuro.models.spec import ModelSpec
from fedneuro.privacy.accountant import compute_epsilon, epsilon_from_history, ledger_epsilon, plan_noise_multiplier, resolve_delta
from fedneuro.privacy.budget import BudgetExceeded, check_round_budget
from fedneuro.privacy.engine import DPTrainingError, UnitDPOptimizer, UnitPoissonSampler, plan_schedule
from fedneuro.privacy.ledger import LedgerEntry, LedgerError, PrivacyLedger
from fedneuro.privacy.spec import PrivacySpec
from fedneuro.training.local import planned_round, train_dp
from fedneuro.training.spec import TrainingSpec


def _data(n_participants: int = 12, windows_each: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_participants * windows_each
    participant = np.repeat(np.arange(n_participants), windows_each)
    y = (participant % 2).astype(np.int64)
    return rng.standard_normal((n, 19, 800)).astype(np.float32), y, participant


def _entry(round_: int, steps: int, q: float = 0.1, sigma: float = 1.0, study: str = "s") -> LedgerEntry:
    return LedgerEntry(study_id=study, round=round_, noise_multiplier=sigma, sample_rate=q, steps=steps,
                       max_grad_norm=1.0, unit="participant", max_windows_per_unit=4, delta=1e-5,
                       recorded_at="2026-11-24T00:00:00+00:00")


def _tiny():
    return build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=0)


TRAIN = TrainingSpec(batch_size=4, local_epochs=1)


def test_participant_level_step_moves_every_adapter_tensor_and_accounts_at_participant_rate() -> None:
    model = _tiny()
    before = trainable_state(model.module)
    X, y, participant = _data()
    result = train_dp(model.module, X, y, participant, training=TRAIN, privacy=PrivacySpec(max_windows_per_participant=3),
                      sampling_seed=1, noise_seed=2)
    after = trainable_state(model.module)
    assert all(not np.array_equal(before[k], after[k]) for k in before)
    assert result.num_units == 12 and result.steps == 3
    assert result.dp_history[0].sample_rate == pytest.approx(4 / 12)  # participants, not windows


def test_window_level_stays_available_and_is_labelled() -> None:
    X, y, participant = _data()
    result = train_dp(_tiny().module, X, y, participant, training=TrainingSpec(batch_size=16),
                      privacy=PrivacySpec(unit="window"), sampling_seed=1, noise_seed=2)
    assert result.num_units == len(X) and result.dp_history[0].sample_rate == pytest.approx(16 / len(X))
    assert PrivacySpec(unit="window").neighbouring_relation() == "add/remove one window"


def test_sampler_bounds_each_participants_contribution_and_is_poisson() -> None:
    participant = np.repeat(np.arange(50), 20)
    schedule = plan_schedule(50, expected_units_per_step=10, max_windows_per_unit=3)
    sampler = UnitPoissonSampler(participant, schedule, seed=0)
    sizes = []
    for _ in range(400):
        windows, groups, n_units = sampler.draw()
        sizes.append(n_units)
        assert len(windows) == 3 * n_units and len(set(participant[windows])) == n_units
        assert np.bincount(groups, minlength=n_units).max(initial=0) <= 3
    assert 9 < np.mean(sizes) < 11 and np.std(sizes) > 1  # Binomial(50, 0.2), not fixed-size


def test_per_unit_gradient_is_clipped_as_one_unit() -> None:
    # With zero noise, a huge learning rate and SGD, the update's norm is bounded by
    # lr * C * (units in batch) / expected units: each participant's averaged gradient is
    # clipped to C once, no matter how many windows it had.
    model = _tiny()
    params = [p for p in model.module.parameters() if p.requires_grad]
    before = torch.cat([p.detach().flatten().clone() for p in params])
    engine = UnitDPOptimizer(model.module, torch.optim.SGD(params, lr=1.0), noise_multiplier=1e-9,
                             max_grad_norm=0.5, expected_units_per_step=2, noise_seed=0)
    X, y, _ = _data(n_participants=2, windows_each=6)
    X *= 100  # large inputs, large raw gradients
    engine.step(torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(np.repeat([0, 1], 6)), 2)
    engine.close()
    after = torch.cat([p.detach().flatten() for p in params])
    assert float((after - before).norm()) <= 0.5 * 2 / 2 + 1e-4


def test_dp_training_is_deterministic_by_seed_and_noise_differs_by_seed() -> None:
    X, y, participant = _data()
    runs = []
    for noise_seed in (2, 2, 3):
        model = _tiny()
        train_dp(model.module, X, y, participant, training=TRAIN, privacy=PrivacySpec(), sampling_seed=1, noise_seed=noise_seed)
        runs.append(trainable_state(model.module))
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_empty_poisson_batches_are_noised_and_counted() -> None:
    X, y, participant = _data(n_participants=20, windows_each=2)
    result = train_dp(_tiny().module, X, y, participant, training=TrainingSpec(batch_size=1, local_epochs=1),
                      privacy=PrivacySpec(), sampling_seed=4, noise_seed=5)
    assert result.empty_batches > 0
    assert result.steps == 20  # every step, empty or not, is accounted


def test_bypassed_adapter_tensor_gets_a_clear_error() -> None:
    model = _tiny()
    # A trainable layer the forward pass never calls, like a LoRA target bypassed by F.linear.
    model.module.base_model.model.add_module("unused_adapter", torch.nn.Linear(2, 2))
    X, y, participant = _data(n_participants=4, windows_each=2)
    with pytest.raises(DPTrainingError, match=r"'base_model.model.unused_adapter.weight' received no per-sample gradient"):
        train_dp(model.module, X, y, participant, training=TrainingSpec(batch_size=4), privacy=PrivacySpec(),
                 sampling_seed=0, noise_seed=0)


def test_epsilon_is_cumulative_across_rounds_via_the_ledger(tmp_path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl")
    X, y, participant = _data()
    model = _tiny()
    epsilons = []
    for round_ in (1, 2):
        result = train_dp(model.module, X, y, participant, training=TRAIN, privacy=PrivacySpec(),
                          sampling_seed=round_, noise_seed=10 + round_)
        ledger.append([_entry(round_, h.steps, h.sample_rate, h.noise_multiplier) for h in result.dp_history])
        # A fresh ledger object: the state survives the process, not just the object.
        epsilons.append(ledger_epsilon(PrivacyLedger(ledger.path).entries("s"), delta=1e-5, accountant="rdp"))
    assert 0 < epsilons[0] < epsilons[1]
    assert epsilons[1] == pytest.approx(epsilon_from_history([(1.0, 4 / 12, 6)], delta=1e-5, accountant="rdp"))


@pytest.mark.parametrize(("sigma", "q", "steps"), [(1.0, 0.1, 100), (1.5, 0.25, 40), (0.8, 0.01, 2000)])
def test_reported_epsilon_matches_an_independent_accountant(sigma: float, q: float, steps: int) -> None:
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    rdp_ref = rdp.RdpAccountant()
    rdp_ref.compose(event, steps)
    pld_ref = pld.PLDAccountant()
    pld_ref.compose(event, steps)
    ours_rdp = epsilon_from_history([(sigma, q, steps)], delta=1e-5, accountant="rdp")
    ours = compute_epsilon([(sigma, q, steps)], delta=1e-5, accountant="best")
    assert ours_rdp == pytest.approx(rdp_ref.get_epsilon(1e-5), rel=0.01)
    # The tighter bound we report is never below the (near-exact) PLD estimate...
    assert ours.epsilon >= pld_ref.get_epsilon(1e-5) - 1e-6
    # ...and close to it.
    assert ours.epsilon == pytest.approx(pld_ref.get_epsilon(1e-5), rel=0.05)
    assert ours.epsilon == min(ours.by_accountant.values())


def test_planning_finds_the_noise_for_a_target() -> None:
    sigma = plan_noise_multiplier(target_epsilon=4.0, delta=1e-5, sample_rate=0.1, steps=100, accountant="rdp")
    assert epsilon_from_history([(sigma, 0.1, 100)], delta=1e-5, accountant="rdp") <= 4.0
    assert epsilon_from_history([(sigma * 0.95, 0.1, 100)], delta=1e-5, accountant="rdp") > 4.0
    with pytest.raises(ValueError, match="'sample_rate' parameter: 1.5"):
        plan_noise_multiplier(target_epsilon=4.0, delta=1e-5, sample_rate=1.5, steps=100, accountant="rdp")


def test_delta_defaults_below_one_over_ten_n_and_refuses_larger() -> None:
    assert resolve_delta(None, 50) == 1e-5
    assert resolve_delta(None, 1_000_000) == pytest.approx(1e-7)
    with pytest.raises(ValueError, match=r"0.01 is above 1/\(10 × 50 units\)"):
        resolve_delta(0.01, 50)


def test_budget_refuses_a_round_that_would_overspend(tmp_path) -> None:
    entries = [_entry(1, 30, q=0.25, sigma=1.0)]
    common = dict(site="hospital-a", study_id="s", server_round=2, study_entries=entries, all_entries=entries,
                  planned=(1.0, 0.25, 30), delta=1e-5, accountant="best", max_lifetime_epsilon=None)
    ok = check_round_budget(max_epsilon=100.0, **common)
    assert 0 < ok.epsilon_spent < ok.epsilon_after_round < 100
    with pytest.raises(BudgetExceeded, match=r"site hospital-a refuses round 2 of study s: .* above the site's budget of 2 per study"):
        check_round_budget(max_epsilon=2.0, **common)
    others = [*entries, _entry(1, 5000, q=0.25, study="other")]
    with pytest.raises(BudgetExceeded, match="lifetime ε over all studies"):
        check_round_budget(**{**common, "all_entries": others, "max_lifetime_epsilon": 100.0}, max_epsilon=100.0)


def test_planned_round_matches_the_steps_taken() -> None:
    X, y, participant = _data()
    planned = planned_round(participant, training=TRAIN, privacy=PrivacySpec())
    result = train_dp(_tiny().module, X, y, participant, training=TRAIN, privacy=PrivacySpec(), sampling_seed=0, noise_seed=0)
    assert (planned.noise_multiplier, planned.sample_rate, planned.steps) == (
        result.dp_history[0].noise_multiplier, result.dp_history[0].sample_rate, result.dp_history[0].steps)


def test_ledger_filters_by_study_and_refuses_a_corrupt_line(tmp_path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl")
    ledger.append([_entry(1, 5), _entry(2, 5, study="other")])
    assert [e.round for e in ledger.entries("s")] == [1]
    assert len(ledger.entries()) == 2
    with ledger.path.open("a") as handle:
        handle.write('{"study_id": "s", "round": 3, "noise_mul')
    with pytest.raises(LedgerError, match=r"ledger\.jsonl, line 3 is unreadable"):
        ledger.entries("s")


def test_a_batchnorm_that_mixes_participants_is_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Conv1d(19, 4, 5), torch.nn.BatchNorm1d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(2, 19, 20))
    for p in model[:2].parameters():
        p.requires_grad = False  # frozen, but still batch statistics in train mode
    model.train()
    with pytest.raises(DPTrainingError, match=r"normalises over the batch \(1\).*use GroupNorm"):
        UnitDPOptimizer(model, torch.optim.SGD(model[3].parameters(), lr=0.1), noise_multiplier=1.0,
                        max_grad_norm=1.0, expected_units_per_step=2, noise_seed=0)


@pytest.mark.parametrize("mode", ["hooks", "ew"])
@pytest.mark.parametrize("preset", ["biot-tiny", "labram-tiny", "mri-resnet-tiny"])
def test_per_participant_gradients_equal_the_mean_of_per_window_gradients(preset: str, mode: str) -> None:
    # Ground truth by brute force: one backward pass per window. BIOT reuses its patch
    # embedding for every channel, the case where per-sample gradient tricks can go wrong.
    from fedneuro.models.registry import get_backbone_preset

    model = build_model(ModelSpec(backbone=preset), n_outputs=2, seed=0).module
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    shape = get_backbone_preset(preset).input_shape
    X = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1])
    groups = torch.tensor([0, 0, 1])
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    model.train()
    expected = []
    for i in range(3):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(X[i : i + 1]), y[i : i + 1]).backward()
        expected.append([p.grad.detach().clone() for _, p in params])
    per_unit = [[(a + b) / 2 for a, b in zip(expected[0], expected[1])], expected[2]]
    model.zero_grad()
    engine = UnitDPOptimizer(model, torch.optim.SGD([p for _, p in params], lr=0.1), noise_multiplier=1.0,
                             max_grad_norm=1.0, expected_units_per_step=2, noise_seed=0, grad_sample_mode=mode)
    torch.nn.functional.cross_entropy(engine.module(X), y).backward()
    engine._average_per_unit(groups, 2)
    for k, (name, p) in enumerate(params):
        for unit in (0, 1):
            torch.testing.assert_close(p.grad_sample[unit], per_unit[unit][k], rtol=1e-4, atol=1e-6, msg=name)
    engine.close()


def test_prv_is_not_run_where_its_memory_is_unbounded() -> None:
    from fedneuro.privacy.accountant import compute_epsilon, plan_noise_multiplier

    # σ = 0.1: Opacus's PRV needed > 20 GB here; the RDP upper bound is reported instead.
    report = compute_epsilon([(0.1, 0.115, 90)], delta=1e-5, accountant="best")
    assert report.accountant == "rdp" and report.epsilon > 1000 and set(report.by_accountant) == {"rdp"}
    with pytest.raises(ValueError, match=r"ε is 2955 by the RDP bound, beyond what the PRV accountant"):
        compute_epsilon([(0.1, 0.115, 90)], delta=1e-5, accountant="prv")
    with pytest.raises(ValueError, match="the prv accountant plans only up to ε = 200"):
        plan_noise_multiplier(target_epsilon=1000, delta=1e-5, sample_rate=0.1, steps=10, accountant="prv")
