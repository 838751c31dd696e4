"""Built-in 3-D MRI encoder presets from MONAI (ResNet, ViT).

Inputs are volumes ``(n, n_channels, x, y, z)`` in RAS+ order, as
:func:`fedneuro.data.mri.load_site_volumes` produces them under the preset's
:class:`~fedneuro.data.mri_spec.MRIContract`.

DP compatibility: BatchNorm mixes the samples of a batch, frozen or not, so the ResNets use
GroupNorm. MONAI 1.6.1's ``ResNet(norm=...)`` applies ``norm`` to the stem only (its
``_make_layer`` drops the argument and the blocks get BatchNorm3d), so every BatchNorm is
replaced after construction. Opacus's validator only inspects *trainable* layers and would
not notice a frozen BatchNorm. Activations are not in-place (an in-place ReLU after a hooked
layer breaks Opacus's backward hooks). peft wraps ``Conv3d``
with LoRA (A: the layer's kernel to rank r, B: 1x1x1 back to the output channels) and
Opacus computes per-sample gradients for both. Weights pretrained with BatchNorm (MedicalNet,
most public 3-D ResNets) do not load into these presets.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from fedneuro.data.mri_spec import MRIContract
from fedneuro.models.registry import BackbonePreset, register_backbone

if TYPE_CHECKING:
    from torch import nn

_RESNET_SIZES = {
    # name: (layers, block_inplanes, group-norm groups, description)
    "mri-resnet-tiny": ((1, 1, 1, 1), (8, 16, 32, 64), 4, "3-D ResNet (MONAI), tiny: for tests"),
    "mri-resnet-base": (
        (2, 2, 2, 2), (64, 128, 256, 512), 32,
        "3-D ResNet-18 (MONAI, GroupNorm), the size of published 3-D MRI encoders (33 M)",
    ),
}
# Sized to the synthetic heads (64 mm field of view), so tests and the demo stay fast.
_TINY_MRI = MRIContract(shape=(32, 32, 32), voxel_size_mm=(2.0, 2.0, 2.0), n_channels=1)
_BASE_MRI = MRIContract(shape=(96, 96, 96), voxel_size_mm=(2.0, 2.0, 2.0), n_channels=1)


def _build_resnet(preset: BackbonePreset, n_outputs: int) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.networks.nets import ResNet

    layers, planes, groups, _ = _RESNET_SIZES[preset.name]
    contract = preset.mri_contract()
    model = ResNet(
        block="basic",
        layers=list(layers),
        block_inplanes=list(planes),
        spatial_dims=3,
        n_input_channels=contract.n_channels,
        conv1_t_size=7,
        conv1_t_stride=2,
        num_classes=n_outputs,
        norm=("group", {"num_groups": groups}),
        act=("relu", {"inplace": False}),
    )
    _replace_batchnorm(model, groups)
    return model


def _replace_batchnorm(module: nn.Module, groups: int) -> None:
    """Swap every BatchNorm for a GroupNorm (weight 1, bias 0) over the same channels."""
    from torch import nn

    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.GroupNorm(groups, child.num_features, eps=child.eps, affine=True))
        else:
            _replace_batchnorm(child, groups)


for _name, (_layers, _planes, _groups, _description) in _RESNET_SIZES.items():
    _last = len(_layers) - 1
    register_backbone(
        BackbonePreset(
            name=_name,
            family="mri-resnet",
            description=_description,
            contract=_TINY_MRI if _name.endswith("-tiny") else _BASE_MRI,
            # The two convolutions of every block of the last two stages (Conv3d LoRA).
            lora_targets=tuple(
                f"layer{stage}.{block}.conv{conv}"
                for stage in (3, 4)
                for block in range(_layers[stage - 1])
                for conv in (1, 2)
            ),
            head_modules=("fc",),
            build=_build_resnet,
            modality="mri",
        )
    )


_VIT_SIZES = {
    # name: (patch, hidden, mlp, layers, heads, description)
    "mri-vit-tiny": (16, 64, 128, 2, 4, "3-D ViT (MONAI), tiny: for tests"),
    "mri-vit-base": (16, 768, 3072, 12, 12, "3-D ViT-B/16 (MONAI), published size (88 M)"),
}


def _build_vit(preset: BackbonePreset, n_outputs: int) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.networks.nets import ViT

    class ViTClassifier(ViT):  # type: ignore[misc]
        """MONAI's ViT returns (logits, hidden states): keep the logits, same state dict."""

        def forward(self, x):  # type: ignore[no-untyped-def]
            return super().forward(x)[0]

    patch, hidden, mlp, layers, heads, _ = _VIT_SIZES[preset.name]
    contract = preset.mri_contract()
    return ViTClassifier(
        in_channels=contract.n_channels,
        img_size=contract.shape,
        patch_size=patch,
        hidden_size=hidden,
        mlp_dim=mlp,
        num_layers=layers,
        num_heads=heads,
        classification=True,
        num_classes=n_outputs,
        post_activation=None,  # MONAI's default Tanh would squash the logits
        spatial_dims=3,
    )


for _name, (_patch, _hidden, _mlp, _vlayers, _heads, _description) in _VIT_SIZES.items():
    register_backbone(
        BackbonePreset(
            name=_name,
            family="mri-vit",
            description=_description,
            contract=_TINY_MRI if _name.endswith("-tiny") else _BASE_MRI,
            # MONAI's SABlock calls qkv and out_proj as modules (unlike LaBraM's F.linear).
            lora_targets=("attn.qkv", "attn.out_proj", "mlp.linear1", "mlp.linear2"),
            head_modules=("classification_head",),
            build=_build_vit,
            modality="mri",
        )
    )
