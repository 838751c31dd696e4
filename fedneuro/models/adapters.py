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

#: Layer types peft's LoRA wraps (and Opacus computes per-sample gradients for).
LORA_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class AdaptedModel:
    """The trainable model with where its parameters came from.

    ``spec``, ``seed`` and ``n_outputs`` are what :func:`build_model` was called with; they
    bind exchanged tensors to the model (:func:`fedneuro.models.exchange.exchange_manifest`).
    """

    module: nn.Module
    preset: BackbonePreset
    weights_sha256: str | None
    spec: ModelSpec | None = None
    seed: int | None = None
    n_outputs: int | None = None

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]


@dataclass(frozen=True)
class ModelFootprint:
    """Sizes of an adapted model: what is exchanged vs what every site holds (fp32 bytes)."""

    backbone_parameters: int
    trainable_parameters: int
    adapter_bytes: int
    backbone_bytes: int

    @property
    def ratio(self) -> float:
        """Adapter bytes / backbone bytes (the exchange's size relative to the model)."""
        return self.adapter_bytes / self.backbone_bytes if self.backbone_bytes else float("inf")


def model_footprint(model: AdaptedModel) -> ModelFootprint:
    """Exchanged (trainable) size vs the plain backbone's size.

    The backbone counts every parameter of the model as it would be deployed (peft's LoRA
    matrices and its trainable copy of the head excluded), in fp32.
    """
    backbone = sum(
        p.numel()
        for name, p in model.module.named_parameters()
        if "lora_" not in name and ".modules_to_save." not in name
    )
    trainable = model.trainable_parameters()
    return ModelFootprint(
        backbone_parameters=backbone,
        trainable_parameters=sum(p.numel() for _, p in trainable),
        adapter_bytes=sum(p.numel() * p.element_size() for _, p in trainable),
        backbone_bytes=backbone * 4,
    )


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
            # The head is task-specific: keep the freshly initialised one (the checkpoint's
            # head, if any, may have another number of classes).
            weights_sha256 = load_backbone_weights(
                backbone, spec.weights, skip_prefixes=tuple(preset.head_modules)
            )
        module = _attach_adapter(backbone, preset, spec)
    return AdaptedModel(
        module=module,
        preset=preset,
        weights_sha256=weights_sha256,
        spec=spec.model_copy(deep=True),
        seed=seed,
        n_outputs=n_outputs,
    )


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


def merge_adapter(model: AdaptedModel) -> nn.Module:
    """The plain backbone with the LoRA update merged into its weights and the trained head.

    Its state dict has the keys of ``preset.build(...)``: loadable without peft. The
    ``AdaptedModel`` is consumed (peft unloads in place); build a new one to keep training.
    """
    module = model.module
    if hasattr(module, "merge_and_unload"):
        module = module.merge_and_unload()
    for parameter in module.parameters():
        parameter.requires_grad = False
    return module.eval()


def _check_targets_exist(backbone: nn.Module, targets: list[str], preset_name: str) -> None:
    names = [name for name, module in backbone.named_modules() if isinstance(module, LORA_LAYER_TYPES)]
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        raise ValueError(
            f"Invalid value for the 'adapter.targets' parameter: {unknown} match no Linear "
            f"or Conv layer of backbone {preset_name!r}. Such layers: {', '.join(names)}"
        )
