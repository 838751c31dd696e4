"""Unit-level DP-SGD on Opacus: Poisson sampling of units, per-unit clipping, Gaussian noise.

Opacus clips per *sample* (per row of the batch). Participant-level DP needs the unit of
clipping to be the participant, who contributes several windows. So each step samples
participants (Poisson, rate q), takes at most k of each one's windows, lets Opacus compute
per-window gradients, averages them per participant, and hands Opacus's DPOptimizer one
gradient row per participant to clip to C and noise with σ·C. The accountant then runs at
the participant sampling rate q. Window-level DP is the special case "one window per unit".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.grad_sample import GradSampleModuleExpandedWeights
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn


class DPTrainingError(RuntimeError):
    """The model or the data cannot be trained with DP-SGD as configured."""


@dataclass(frozen=True)
class DPSchedule:
    """How many units there are, how often each is sampled, how many steps an epoch takes."""

    n_units: int
    sample_rate: float
    steps_per_epoch: int
    max_windows_per_unit: int

    @property
    def expected_units_per_step(self) -> float:
        return self.sample_rate * self.n_units


def plan_schedule(n_units: int, *, expected_units_per_step: int, max_windows_per_unit: int) -> DPSchedule:
    if n_units < 1:
        raise DPTrainingError("no privacy units (participants or windows) to train on")
    batch = min(expected_units_per_step, n_units)
    return DPSchedule(
        n_units=n_units,
        sample_rate=batch / n_units,
        steps_per_epoch=max(1, round(n_units / batch)),
        max_windows_per_unit=max_windows_per_unit,
    )


class UnitPoissonSampler:
    """Each step includes every unit independently with probability q (Poisson sampling)."""

    def __init__(self, unit_of_window: np.ndarray, schedule: DPSchedule, *, seed: int) -> None:
        self.schedule = schedule
        self.rng = np.random.default_rng(seed)
        order = np.argsort(unit_of_window, kind="stable")
        units, starts = np.unique(unit_of_window[order], return_index=True)
        if len(units) != schedule.n_units:
            raise DPTrainingError(f"schedule is for {schedule.n_units} units but the data has {len(units)}")
        self.windows_of_unit = np.split(order, starts[1:])

    def draw(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(window indices, unit position 0..B-1 of each window, number of sampled units B)."""
        chosen = np.flatnonzero(self.rng.random(self.schedule.n_units) < self.schedule.sample_rate)
        windows, groups = [], []
        k = self.schedule.max_windows_per_unit
        for position, unit in enumerate(chosen):
            own = self.windows_of_unit[unit]
            if len(own) > k:  # bound the unit's contribution to k windows
                own = self.rng.choice(own, size=k, replace=False)
            windows.append(own)
            groups.append(np.full(len(own), position))
        if not windows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
        return np.concatenate(windows), np.concatenate(groups), len(chosen)


class UnitDPOptimizer:
    """One DP-SGD step per call: per-unit gradient, clipped to C, plus N(0, σ²C²) noise."""

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_units_per_step: float,
        noise_seed: int,
        grad_sample_mode: Literal["hooks", "functorch", "ew"] = "ew",
    ) -> None:
        # Opacus validates trainable layers only; a frozen BatchNorm in train mode still mixes
        # the samples of a batch, so one participant's data would leak into another's gradient.
        mixing = [n for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        if mixing:
            raise DPTrainingError(
                f"the model normalises over the batch ({', '.join(mixing[:3])}): BatchNorm mixes "
                "participants and breaks per-sample privacy; use GroupNorm/LayerNorm in the backbone"
            )
        problems = ModuleValidator.validate(module, strict=False)
        if problems:
            raise DPTrainingError(
                "the model has layers Opacus cannot compute per-sample gradients for: "
                + "; ".join(str(p) for p in problems)
            )
        self.named_parameters = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not self.named_parameters:
            raise DPTrainingError("the model has no trainable parameters")
        try:
            if grad_sample_mode == "ew":
                self.module = GradSampleModuleExpandedWeights(module, batch_first=True, loss_reduction="mean")
            else:
                self.module = GradSampleModule(
                    module, batch_first=True, loss_reduction="mean", force_functorch=grad_sample_mode == "functorch"
                )
        except NotImplementedError as error:
            raise DPTrainingError(f"Opacus cannot compute per-sample gradients for this model: {error}") from error
        device = self.named_parameters[0][1].device
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_units_per_step,  # type: ignore[arg-type]
            loss_reduction="mean",
            generator=torch.Generator(device=device).manual_seed(noise_seed),
        )
        self.criterion = nn.CrossEntropyLoss()

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, n_units: int) -> float | None:
        """Take one noisy step; returns the batch loss (None for an empty batch)."""
        self.optimizer.zero_grad(set_to_none=True)
        before = [p.detach().clone() for _, p in self.named_parameters]
        loss_value = None
        if n_units == 0:
            # An empty Poisson batch still releases a noisy update (and is accounted).
            for _, p in self.named_parameters:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        else:
            loss = self.criterion(self.module(inputs), targets)
            loss.backward()
            self._average_per_unit(groups, n_units)
            loss_value = float(loss.detach())
        self.optimizer.step()
        self._check_moved(before)
        return loss_value

    def _average_per_unit(self, groups: torch.Tensor, n_units: int) -> None:
        groups = groups.to(self.named_parameters[0][1].device)
        counts = torch.bincount(groups, minlength=n_units).clamp(min=1)
        for name, p in self.named_parameters:
            per_window = getattr(p, "grad_sample", None)
            if per_window is None:
                raise DPTrainingError(
                    f"trainable tensor {name!r} received no per-sample gradient: its layer is "
                    "bypassed or called functionally (e.g. F.linear on its weight). Remove it from "
                    "[model.adapter] targets"
                )
            shape = (n_units, *p.shape)
            summed = torch.zeros(shape, dtype=per_window.dtype, device=p.device).index_add_(0, groups, per_window)
            p.grad_sample = summed / counts.view(-1, *([1] * p.dim())).to(summed.dtype)

    def _check_moved(self, before: list[torch.Tensor]) -> None:
        # Opacus issue #820: LoRA under DP can silently leave weights unchanged.
        frozen = [n for (n, p), old in zip(self.named_parameters, before) if torch.equal(p.detach(), old)]
        if frozen:
            raise DPTrainingError(
                f"{len(frozen)} adapter tensor(s) did not change after a DP step (e.g. {frozen[0]!r}); "
                "the optimiser is not updating them"
            )

    def close(self) -> None:
        """Remove Opacus's hooks so the module can be reused (next round, evaluation)."""
        close = getattr(self.module, "_close", None)  # expanded weights register no hooks
        if close is not None:
            close()
