"""Local DP-SGD training and evaluation of the adapted model on one site's windows."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedneuro.metrics import confusion_counts
from fedneuro.models.device import device_plan
from fedneuro.privacy.engine import DPSchedule, DPTrainingError, UnitDPOptimizer, UnitPoissonSampler, plan_schedule
from fedneuro.privacy.spec import PrivacySpec
from fedneuro.training.spec import TrainingSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPStepRecord:
    """DP-SGD steps actually taken with one (σ, q); what the ledger records."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class LocalTrainResult:
    steps: int
    empty_batches: int
    mean_loss: float
    num_examples: int
    num_units: int
    dp_history: list[DPStepRecord]


def privacy_units(participant: np.ndarray, privacy: PrivacySpec) -> np.ndarray:
    """The privacy unit of each window: its participant, or the window itself."""
    if privacy.unit == "participant":
        return np.asarray(participant)
    return np.arange(len(participant))


def dp_schedule(participant: np.ndarray, *, training: TrainingSpec, privacy: PrivacySpec) -> DPSchedule:
    units = privacy_units(participant, privacy)
    return plan_schedule(
        len(np.unique(units)),
        expected_units_per_step=training.batch_size,
        max_windows_per_unit=privacy.max_windows_per_participant if privacy.unit == "participant" else 1,
    )


def planned_round(participant: np.ndarray, *, training: TrainingSpec, privacy: PrivacySpec) -> DPStepRecord:
    """The DP steps a round will take, known before training (for budget checks)."""
    schedule = dp_schedule(participant, training=training, privacy=privacy)
    return DPStepRecord(privacy.noise_multiplier, schedule.sample_rate, schedule.steps_per_epoch * training.local_epochs)


def build_optimizer(model: nn.Module, training: TrainingSpec) -> torch.optim.Optimizer:
    """The study's optimiser over the trainable (adapter and head) parameters."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.learning_rate, weight_decay=training.weight_decay)
    return torch.optim.SGD(parameters, lr=training.learning_rate, momentum=training.momentum,
                           weight_decay=training.weight_decay)


def train_dp(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    participant: np.ndarray,
    *,
    training: TrainingSpec,
    privacy: PrivacySpec,
    sampling_seed: int,
    noise_seed: int,
    device: str = "cpu",
    proximal_mu: float = 0.0,
) -> LocalTrainResult:
    """Train ``model``'s trainable parameters in place with unit-level DP-SGD.

    ``device`` ("cpu", "cuda", "auto", …) is where the model trains, in fp32: clipping norms
    come from per-sample gradients, which bf16 would distort. ``proximal_mu`` > 0 (FedProx)
    pulls the weights towards the model the round started from after every DP step; that
    pull depends on no data, so it costs no privacy.

    ``participant`` gives each window's participant; with ``privacy.unit == "participant"``
    participants are the sampled, clipped and accounted unit. ``noise_seed`` must be secret
    to the site in deployment: whoever knows it can regenerate the noise.
    """
    if len(X) == 0:
        raise DPTrainingError("no training windows: the site has no eligible training data")
    plan = device_plan(device, precision="fp32")
    plan.prepare(model)
    units = privacy_units(participant, privacy)
    schedule = dp_schedule(participant, training=training, privacy=privacy)
    sampler = UnitPoissonSampler(np.unique(units, return_inverse=True)[1], schedule, seed=sampling_seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, training)
    X_all, y_all = torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.int64))
    start = [p.detach().clone() for p in parameters] if proximal_mu > 0 else []
    losses: list[float] = []
    empty = 0
    # Dropout draws from torch's global RNG: fork and seed it, so training is reproducible by
    # seed without disturbing the caller's RNG state.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(sampling_seed)
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        model.train()
        engine = UnitDPOptimizer(
            model,
            optimizer,
            noise_multiplier=privacy.noise_multiplier,
            max_grad_norm=privacy.max_grad_norm,
            expected_units_per_step=schedule.expected_units_per_step,
            noise_seed=noise_seed,
        )
        try:
            for _ in range(training.local_epochs * schedule.steps_per_epoch):
                windows, groups, n_units = sampler.draw()
                index = torch.from_numpy(windows)
                loss = engine.step(
                    plan.to_device(X_all[index]), plan.to_device(y_all[index]), torch.from_numpy(groups), n_units
                )
                if loss is None:
                    empty += 1
                else:
                    losses.append(loss)
                if start:  # gradient step on (mu/2)·||w - w_start||²
                    with torch.no_grad():
                        for p, w0 in zip(parameters, start):
                            p.sub_(training.learning_rate * proximal_mu * (p - w0))
        finally:
            engine.close()
    model.eval()
    steps = training.local_epochs * schedule.steps_per_epoch
    return LocalTrainResult(
        steps=steps,
        empty_batches=empty,
        mean_loss=float(np.mean(losses)) if losses else float("nan"),
        num_examples=len(X),
        num_units=schedule.n_units,
        dp_history=[DPStepRecord(privacy.noise_multiplier, schedule.sample_rate, steps)],
    )


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device  # wherever training left the model
    outputs = [
        torch.softmax(model(torch.from_numpy(X[i : i + batch_size]).to(device)).float(), dim=1).cpu().numpy()
        for i in range(0, len(X), batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def participant_losses(model: nn.Module, X: np.ndarray, y: np.ndarray, participant: np.ndarray) -> np.ndarray:
    """Mean cross-entropy per participant (sorted by participant index), for audits."""
    proba = predict_proba(model, X)
    losses = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))
    return np.array([losses[participant == p].mean() for p in np.unique(participant)])


@dataclass(frozen=True)
class EvaluationCounts:
    """Aggregate evaluation at a site: confusion counts only, never per-participant values."""

    window_confusion: np.ndarray
    participant_confusion: np.ndarray
    mean_loss: float
    num_windows: int
    num_participants: int


def evaluate(
    model: nn.Module, X: np.ndarray, y: np.ndarray, participant: np.ndarray, *, n_classes: int
) -> EvaluationCounts:
    """Window-level and participant-level (mean probability over windows) confusion counts."""
    proba = predict_proba(model, X)
    if len(proba) == 0:
        empty = np.zeros((n_classes, n_classes), dtype=np.int64)
        return EvaluationCounts(empty, empty, float("nan"), 0, 0)
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))
    window_confusion = confusion_counts(y, proba.argmax(axis=1), n_classes)
    ids = np.unique(participant)
    part_true = np.array([y[participant == i][0] for i in ids])
    part_pred = np.array([proba[participant == i].mean(axis=0).argmax() for i in ids])
    return EvaluationCounts(
        window_confusion=window_confusion,
        participant_confusion=confusion_counts(part_true, part_pred, n_classes),
        mean_loss=loss,
        num_windows=len(y),
        num_participants=len(ids),
    )
