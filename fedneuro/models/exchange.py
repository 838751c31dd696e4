"""The exchanged state: only trainable tensors, by name, in a fixed order.

Written by hand rather than with peft's ``get_peft_model_state_dict`` because the exchange
must also cover head-only models (no peft wrapper) and must match exactly what the
optimiser trains, which is what ``requires_grad`` says.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedneuro.models.manifest import TensorManifest


def trainable_state(module: nn.Module) -> dict[str, np.ndarray]:
    """Copy of every trainable tensor, sorted by name (the exchange order)."""
    named = sorted((n, p) for n, p in module.named_parameters() if p.requires_grad)
    return {name: p.detach().cpu().numpy().copy() for name, p in named}


def trainable_manifest(module: nn.Module) -> TensorManifest:
    return TensorManifest.describe(trainable_state(module))


def load_trainable_state(module: nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Copy exchanged tensors into the trainable parameters; names and shapes must match."""
    TensorManifest.describe(trainable_state(module)).check(state, source="received state")
    parameters = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(torch.from_numpy(np.asarray(value)))
