"""Backbone + peft adapter + head: the model a site fine-tunes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from fedneuro.models.registry import BackbonePreset, get_backbone_preset
from fedneuro.models.spec import ModelSpec
from fedneuro.models.weights import load_backbone_weights

logger = logging.getLogger(__name__)


@dataclass
class AdaptedModel:
    """The trainable model with where its parameters came from."""

    module: nn.Module
    preset: BackbonePreset
    weights_sha256: str | None

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]


def build_model(spec: ModelSpec, *, n_outputs: int, seed: int) -> AdaptedModel:
    """Build the backbone (random init from ``seed`` or local weights) and attach the adapter.

    The same spec and seed give bit-identical models at every site and at the coordinator,
    without touching the caller's global RNG state (DP noise must never share a seed).
    """
    preset = get_backbone_preset(spec.backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = preset.build(preset, n_outputs)
        weights_sha256 = None
        if spec.weights is not None:
            head_state = {
                k: v.clone() for k, v in backbone.state_dict().items()
                if k.startswith(preset.head_modules)
            }
            weights_sha256 = load_backbone_weights(backbone, spec.weights)
            # The head is task-specific: keep the freshly initialised one.
            backbone.load_state_dict(head_state, strict=False)
        module = _attach_adapter(backbone, preset, spec)
    return AdaptedModel(module=module, preset=preset, weights_sha256=weights_sha256)


def _attach_adapter(backbone: nn.Module, preset: BackbonePreset, spec: ModelSpec) -> nn.Module:
    adapter = spec.adapter
    if adapter.kind == "head":
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad = name.startswith(preset.head_modules)
        return backbone
    targets = adapter.targets or list(preset.lora_targets)
    _check_targets_exist(backbone, targets, preset.name)
    config = LoraConfig(
        r=adapter.rank,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=targets,
        modules_to_save=list(preset.head_modules),
        bias="none",
    )
    return get_peft_model(backbone, config)


def _check_targets_exist(backbone: nn.Module, targets: list[str], preset_name: str) -> None:
    names = [name for name, module in backbone.named_modules() if isinstance(module, nn.Linear)]
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        raise ValueError(
            f"Invalid value for the 'adapter.targets' parameter: {unknown} match no Linear "
            f"layer of backbone {preset_name!r}. Linear layers: {', '.join(names)}"
        )
