"""Backbone presets: a named architecture size with its input contract and LoRA targets.

A registry (like peft's method registry) so backbones are pluggable and every registered
preset is covered by the gradient test in tests/test_models.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedneuro.data.spec import InputContract

if TYPE_CHECKING:
    from torch import nn

STANDARD_1020_19: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)  # fmt: skip


@dataclass(frozen=True)
class BackbonePreset:
    """One registered backbone configuration.

    ``lora_targets`` are module-name suffixes verified to receive gradients: some attention
    projections are called functionally and would silently stay untrained.
    """

    name: str
    family: str
    description: str
    contract: InputContract
    lora_targets: tuple[str, ...]
    head_modules: tuple[str, ...]
    build: Callable[[BackbonePreset, int], nn.Module] = field(repr=False)


_REGISTRY: dict[str, BackbonePreset] = {}


def register_backbone(preset: BackbonePreset) -> BackbonePreset:
    if preset.name in _REGISTRY:
        raise ValueError(f"backbone preset {preset.name!r} is already registered")
    _REGISTRY[preset.name] = preset
    return preset


def get_backbone_preset(name: str) -> BackbonePreset:
    _ensure_builtin_presets()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Invalid value for the 'backbone' parameter: {name!r}. "
            f"Registered presets: {', '.join(sorted(_REGISTRY))} (see `fedneuro model list`)."
        ) from None


def list_backbone_presets() -> list[BackbonePreset]:
    _ensure_builtin_presets()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def _ensure_builtin_presets() -> None:
    # Imported lazily so `import fedneuro.models.registry` stays free of torch.
    from fedneuro.models import backbones  # noqa: F401
