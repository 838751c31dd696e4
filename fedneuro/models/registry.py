"""Backbone presets: a named architecture size with its input contract and LoRA targets.

A registry (like peft's method registry) so backbones are pluggable and every registered
preset is covered by the gradient and DP tests in tests/test_models.py.

A preset's ``modality`` says which data layer feeds it: ``"eeg"`` presets take windows
``(n, n_chans, n_times)`` under an :class:`~fedneuro.data.spec.InputContract`; ``"mri"``
presets take volumes ``(n, n_channels, x, y, z)`` under an
:class:`~fedneuro.data.mri_spec.MRIContract`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from fedneuro.data.mri_spec import MRIContract
from fedneuro.data.spec import InputContract

if TYPE_CHECKING:
    from torch import nn

STANDARD_1020_19: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)  # fmt: skip

Modality = Literal["eeg", "mri"]
_CONTRACT_OF: dict[str, type[InputContract] | type[MRIContract]] = {
    "eeg": InputContract,
    "mri": MRIContract,
}


@dataclass(frozen=True)
class BackbonePreset:
    """One registered backbone configuration.

    ``lora_targets`` are module-name suffixes verified to receive gradients: some attention
    projections are called functionally and would silently stay untrained.
    ``contract`` is an ``InputContract`` for ``modality="eeg"`` and an ``MRIContract`` for
    ``modality="mri"``.
    """

    name: str
    family: str
    description: str
    contract: InputContract | MRIContract
    lora_targets: tuple[str, ...]
    head_modules: tuple[str, ...]
    build: Callable[[BackbonePreset, int], nn.Module] = field(repr=False)
    modality: Modality = "eeg"

    def __post_init__(self) -> None:
        expected = _CONTRACT_OF.get(self.modality)
        if expected is None:
            raise ValueError(
                f"Invalid value for the 'modality' parameter of preset {self.name!r}: "
                f"{self.modality!r}. Allowed values are 'eeg' and 'mri'."
            )
        if not isinstance(self.contract, expected):
            raise ValueError(
                f"preset {self.name!r} has modality {self.modality!r}, so its contract must be "
                f"an {expected.__name__}, got {type(self.contract).__name__}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (n_chans, n_times) for EEG, (n_channels, x, y, z) for MRI."""
        if isinstance(self.contract, MRIContract):
            return (self.contract.n_channels, *self.contract.shape)
        return (self.contract.n_chans, self.contract.n_times)

    def eeg_contract(self) -> InputContract:
        """The EEG contract; ``ValueError`` naming the preset when it takes MRI volumes."""
        if not isinstance(self.contract, InputContract):
            raise ValueError(
                f"backbone {self.name!r} takes MRI volumes ({_describe(self.contract)}), not "
                "EEG windows: choose an EEG backbone (`fedneuro model list`) for EEG data"
            )
        return self.contract

    def mri_contract(self) -> MRIContract:
        """The MRI contract; ``ValueError`` naming the preset when it takes EEG windows."""
        if not isinstance(self.contract, MRIContract):
            raise ValueError(
                f"backbone {self.name!r} takes EEG windows ({_describe(self.contract)}), not "
                "MRI volumes: choose an MRI backbone (`fedneuro model list`) for MRI data"
            )
        return self.contract

    def describe_contract(self) -> str:
        return _describe(self.contract)


def _describe(contract: InputContract | MRIContract) -> str:
    if isinstance(contract, MRIContract):
        shape = "x".join(str(s) for s in contract.shape)
        voxel = "x".join(f"{v:g}" for v in contract.voxel_size_mm)
        if len(set(contract.shape)) == 1:
            shape = f"{contract.shape[0]}^3"
        if len(set(contract.voxel_size_mm)) == 1:
            voxel = f"{contract.voxel_size_mm[0]:g}"
        return f"{contract.n_channels} ch, {shape} vox, {voxel} mm"
    return (
        f"{contract.n_chans} ch, {contract.sfreq:g} Hz, {contract.input_window_seconds:g} s"
    )


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
    from fedneuro.models import backbones, mri_backbones  # noqa: F401
