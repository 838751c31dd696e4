"""Local DP-SGD training and evaluation of the adapted model on one site's windows."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedneuro.metrics import confusion_counts
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
    dp_history: list[DPStepRecord]


def train_dp(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    training: TrainingSpec,
    privacy: PrivacySpec,
    sampling_seed: int,
    noise_seed: int,
) -> LocalTrainResult:
    """Train ``model``'s trainable parameters with DP-SGD (Poisson sampling) in place.

    ``noise_seed`` must be secret to the site in deployment: whoever knows it can
    regenerate the noise. It is separate from ``sampling_seed`` and from the model seed.
    """
    if len(X) == 0:
        raise ValueError("no training windows: the site has no eligible training data")
    dataset = TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    batch_size = min(training.batch_size, len(dataset))
    # Poisson sampling with our own generator: Opacus would otherwise draw from torch's
    # global RNG, which breaks determinism by seed.
    loader = DPDataLoader.from_data_loader(
        DataLoader(dataset, batch_size=batch_size),
        generator=torch.Generator().manual_seed(sampling_seed),
    )
    parameters = [p for p in model.parameters() if p.requires_grad]
    if training.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            parameters, lr=training.learning_rate, weight_decay=training.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            parameters, lr=training.learning_rate, weight_decay=training.weight_decay
        )
    # Dropout draws from torch's global RNG: fork it and seed it so training is reproducible
    # by seed without disturbing the caller's RNG state.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(sampling_seed)
        # Opacus warns that secure_mode is off; the noise generator we pass is seeded from a
        # site secret (or, in simulations, from the study seed) on purpose.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        engine = PrivacyEngine(accountant="rdp")
        model.train()
        private_model, private_optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=privacy.noise_multiplier,
            max_grad_norm=privacy.max_grad_norm,
            poisson_sampling=False,  # the loader above already samples Poisson batches
            noise_generator=torch.Generator().manual_seed(noise_seed),
        )
        criterion = nn.CrossEntropyLoss()
        losses: list[float] = []
        empty_batches = 0
        for _ in range(training.local_epochs):
            for xb, yb in private_loader:
                private_optimizer.zero_grad(set_to_none=True)
                if len(xb) == 0:
                    # An empty Poisson batch still releases a noisy update, and is accounted.
                    empty_batches += 1
                    for p in parameters:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                else:
                    loss = criterion(private_model(xb), yb)
                    loss.backward()
                    losses.append(float(loss.detach()))
                private_optimizer.step()
    private_model.eval()
    history = [DPStepRecord(float(s), float(q), int(n)) for s, q, n in engine.accountant.history]
    # Leave the caller's module free of Opacus hooks so it can be reused next round.
    private_model._close()
    return LocalTrainResult(
        steps=sum(h.steps for h in history),
        empty_batches=empty_batches,
        mean_loss=float(np.mean(losses)) if losses else float("nan"),
        num_examples=len(dataset),
        dp_history=history,
    )


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    model.eval()
    outputs = [
        torch.softmax(model(torch.from_numpy(X[i : i + batch_size])), dim=1).numpy()
        for i in range(0, len(X), batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


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
