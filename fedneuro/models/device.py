"""Where a model runs: device choice, bf16 autocast where supported, pinned host tensors.

Everything works on CPU (CI has no GPU); on CUDA, inputs are staged in pinned host memory
and copied asynchronously, and forward passes run under bf16 autocast when the GPU
supports it. Training may use :meth:`DevicePlan.to_device` / :meth:`DevicePlan.autocast`
the same way (see :func:`device_plan`).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

Precision = Literal["auto", "fp32", "bf16"]
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def select_device(requested: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else CPU. ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``
    are taken as given after checking they exist."""
    name = requested.strip().lower()
    if not _DEVICE.match(name):
        raise ValueError(
            f"Invalid value for the 'device' parameter: {requested!r}. Allowed values are "
            "'auto', 'cpu', 'cuda', 'cuda:N' and 'mps'."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"Invalid value for the 'device' parameter: {requested!r}, but this torch sees "
                f"no CUDA device (torch {torch.__version__}). Use 'cpu' or 'auto'."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"Invalid value for the 'device' parameter: {requested!r}, but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist (cuda:0..)."
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Invalid value for the 'device' parameter: {requested!r}, but MPS is not available.")
    return device


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA GPUs with native bf16 (Ampere and later)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class DevicePlan:
    """A device with how to feed it: autocast dtype (None = fp32) and pinned host memory."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    pin_memory: bool

    @property
    def description(self) -> str:
        precision = "bf16 autocast" if self.autocast_dtype == torch.bfloat16 else "fp32"
        return f"{self.device} ({precision}{', pinned host memory' if self.pin_memory else ''})"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Context for forward passes: bf16 autocast on supporting GPUs, nothing otherwise."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def to_device(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Host array -> tensor on the device (via pinned memory and a non-blocking copy on CUDA)."""
        tensor = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        if self.device.type == "cpu":
            return tensor
        if self.pin_memory and tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=self.pin_memory)

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move ``module`` to the device (in place; returns it)."""
        return module.to(self.device)


def device_plan(device: str = "auto", *, precision: Precision = "auto") -> DevicePlan:
    """Pick the device and how to use it.

    ``precision="auto"`` uses bf16 autocast where the device supports it (CUDA with bf16),
    fp32 elsewhere; ``"bf16"`` insists (``ValueError`` where unsupported); ``"fp32"`` never
    autocasts. For DP training keep ``"fp32"`` unless per-sample gradients were checked in
    bf16: clipping norms are computed from them.
    """
    chosen = select_device(device)
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(
            f"Invalid value for the 'precision' parameter: {precision!r}. Allowed values are "
            "'auto', 'fp32' and 'bf16'."
        )
    if precision == "bf16" and not bf16_supported(chosen):
        raise ValueError(
            f"Invalid value for the 'precision' parameter: 'bf16', but device {chosen} has no "
            "bf16 support here. Use 'auto' or 'fp32'."
        )
    use_bf16 = precision != "fp32" and bf16_supported(chosen)
    return DevicePlan(
        device=chosen,
        autocast_dtype=torch.bfloat16 if use_bf16 else None,
        pin_memory=chosen.type == "cuda",
    )


@torch.no_grad()
def predict_proba(
    module: nn.Module, X: np.ndarray, *, plan: DevicePlan | None = None, batch_size: int = 64
) -> np.ndarray:
    """Class probabilities (n, K) float32 for inputs ``X``, batch by batch on ``plan``'s device.

    The module must already be on the plan's device (:meth:`DevicePlan.prepare`).
    """
    plan = plan or device_plan("cpu")
    if batch_size < 1:
        raise ValueError(f"Invalid value for the 'batch_size' parameter: {batch_size}; must be >= 1.")
    module.eval()
    outputs: list[np.ndarray] = []
    for start in range(0, len(X), batch_size):
        inputs = plan.to_device(np.asarray(X[start : start + batch_size], dtype=np.float32))
        with plan.autocast():
            logits = module(inputs)
        outputs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32, copy=False)

