"""The exchanged state: only trainable tensors, by name, in a fixed order.

Written by hand rather than with peft's ``get_peft_model_state_dict`` because the exchange
must also cover head-only models (no peft wrapper) and must match exactly what the
optimiser trains, which is what ``requires_grad`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedneuro.models.manifest import ModelBinding, TensorManifest

if TYPE_CHECKING:  # adapters imports peft (slow): only its type is needed here
    from fedneuro.models.adapters import AdaptedModel


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


def model_binding(model: AdaptedModel) -> ModelBinding:
    """What the exchanged tensors of ``model`` are bound to (from :func:`build_model`'s inputs)."""
    if model.spec is None or model.seed is None or model.n_outputs is None:
        raise ValueError(
            "this AdaptedModel was not made by fedneuro.models.adapters.build_model (spec, seed "
            "and n_outputs are unknown): build it with build_model to bind its tensors"
        )
    adapter = model.spec.adapter.model_dump(mode="json")
    if adapter["kind"] != "head" and adapter["targets"] is None:
        # Spelled out, so "the preset's targets" and the same list written by hand agree.
        adapter["targets"] = list(model.preset.lora_targets)
    return ModelBinding(
        backbone=model.preset.name,
        weights_sha256=model.weights_sha256,
        adapter=adapter,
        n_outputs=model.n_outputs,
        seed=model.seed,
    )


def exchange_manifest(model: AdaptedModel) -> TensorManifest:
    """The full exchange manifest: trainable tensors (sorted by name) bound to the model."""
    return TensorManifest.describe(trainable_state(model.module), model=model_binding(model))


def check_exchange_manifest(
    local: TensorManifest | AdaptedModel,
    received: TensorManifest | str | bytes,
    *,
    local_role: str = "site",
    remote_role: str = "coordinator",
) -> TensorManifest:
    """Refuse a received manifest that describes another model; returns it parsed.

    ``received`` is a manifest or its :meth:`TensorManifest.to_json` text (as carried in a
    Flower ConfigRecord). Raises ``ExchangeError`` listing every difference, e.g.
    ``backbone: site has 'biot-small', coordinator sent 'biot-tiny'``.
    """
    mine = local if isinstance(local, TensorManifest) else exchange_manifest(local)
    theirs = (
        received
        if isinstance(received, TensorManifest)
        else TensorManifest.from_json(received, source=f"manifest from {remote_role}")
    )
    mine.check_matches(theirs, local=local_role, remote=remote_role)
    return theirs
