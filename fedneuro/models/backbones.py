"""Built-in EEG backbone presets from braindecode's foundation models (BIOT, LaBraM, CBraMod)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from fedneuro.data.spec import InputContract
from fedneuro.models.registry import STANDARD_1020_19, BackbonePreset, register_backbone

if TYPE_CHECKING:
    from torch import nn

# BIOT's STFT uses a rectangular window on purpose (its published design); torch warns on
# every forward pass otherwise.
warnings.filterwarnings("ignore", message="A window was not provided", category=UserWarning)

# Every EEG preset takes the 19-channel 10-20 montage at 200 Hz in 4-s windows (CBraMod
# needs whole 1-s patches, so the window must stay a multiple of 1 s).
_EEG_10_20 = InputContract(channels=STANDARD_1020_19, sfreq=200.0, input_window_seconds=4.0)


def _braindecode_model(name: str) -> type[nn.Module]:
    with warnings.catch_warnings():
        # Importing braindecode.models warns (deprecated MNE montages, pandas in wfdb).
        warnings.simplefilter("ignore")
        import braindecode.models

    return getattr(braindecode.models, name)  # type: ignore[no-any-return]


def _register_family(
    family: str,
    descriptions: dict[str, str],
    build: object,
    *,
    lora_targets: tuple[str, ...],
    head_modules: tuple[str, ...],
) -> None:
    for name, description in descriptions.items():
        register_backbone(
            BackbonePreset(
                name=name,
                family=family,
                description=description,
                contract=_EEG_10_20,
                lora_targets=lora_targets,
                head_modules=head_modules,
                build=build,  # type: ignore[arg-type]
            )
        )


_BIOT_SIZES = {
    # name: (embed_dim, num_heads, num_layers, description)
    "biot-tiny": (32, 2, 1, "BIOT, tiny: for tests"),
    "biot-small": (64, 4, 2, "BIOT, small: the demo's default on CPU"),
    "biot-base": (256, 8, 4, "BIOT, published size (pair with pretrained weights)"),
}


def _build_biot(preset: BackbonePreset, n_outputs: int) -> nn.Module:
    BIOT = _braindecode_model("BIOT")
    embed_dim, num_heads, num_layers, _ = _BIOT_SIZES[preset.name]
    contract = preset.eeg_contract()
    return BIOT(
        n_outputs=n_outputs,
        n_chans=contract.n_chans,
        n_times=contract.n_times,
        sfreq=contract.sfreq,
        embed_dim=embed_dim,
        num_heads=num_heads,
        num_layers=num_layers,
        # Light regularisation: the frozen backbone is adapted by a low-rank update only.
        drop_prob=0.1,
        att_drop_prob=0.0,
        att_layer_drop_prob=0.0,
    )


_register_family(
    "biot",
    {name: size[-1] for name, size in _BIOT_SIZES.items()},
    _build_biot,
    # Verified to receive gradients (tests/test_models.py): the frequency-patch embedding
    # and the linear-attention projections.
    lora_targets=("patch_embedding.projection", "to_q", "to_k", "to_v", "to_out"),
    head_modules=("final_layer.classification_head",),
)


_LABRAM_SIZES = {
    # name: (embed_dim, num_heads, num_layers, description)
    "labram-tiny": (64, 4, 2, "LaBraM, tiny: for tests"),
    "labram-base": (200, 10, 12, "LaBraM-base, published size (5.8 M parameters)"),
}


def _build_labram(preset: BackbonePreset, n_outputs: int) -> nn.Module:
    Labram = _braindecode_model("Labram")
    embed_dim, num_heads, num_layers, _ = _LABRAM_SIZES[preset.name]
    contract = preset.eeg_contract()
    model = Labram(
        n_outputs=n_outputs,
        n_chans=contract.n_chans,
        n_times=contract.n_times,
        sfreq=contract.sfreq,
        embed_dim=embed_dim,
        num_heads=num_heads,
        num_layers=num_layers,
    )
    channel_names = list(contract.channels)

    # Labram needs the montage's channel names at every call; inject them with a hook so
    # peft, Opacus and callers see the plain ``model(x)`` interface and unchanged names.
    def _add_channel_names(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs.setdefault("ch_names", channel_names)
        return args, kwargs

    model.register_forward_pre_hook(_add_channel_names, with_kwargs=True)
    return model


_register_family(
    "labram",
    {name: size[-1] for name, size in _LABRAM_SIZES.items()},
    _build_labram,
    # attn.qkv is applied with F.linear on its weight: a LoRA there gets no gradient.
    lora_targets=("attn.proj", "mlp.0", "mlp.2"),
    head_modules=("final_layer",),
)


# CBraMod (criss-cross attention): the patch size is fixed at 200 samples (1 s at 200 Hz,
# braindecode hard-codes the 101 rFFT bins), and the model width d_model is set by the
# patch-embedding convolutions: channels x patches after their strides (25 x 8 = 200
# published). The tiny size uses 8 convolution channels (d_model 64).
_CBRAMOD_CONV_PUBLISHED = ((25, 49, 25, 24, (5, 25)), (25, 3, 1, 1, (5, 25)), (25, 3, 1, 1, (5, 25)))
_CBRAMOD_CONV_TINY = ((8, 49, 25, 24, (4, 8)), (8, 3, 1, 1, (4, 8)), (8, 3, 1, 1, (4, 8)))
_CBRAMOD_SIZES = {
    # name: (conv stack, n_layer, nhead, dim_feedforward, emb_dim, description)
    "cbramod-tiny": (_CBRAMOD_CONV_TINY, 2, 4, 128, 32, "CBraMod, tiny: for tests"),
    "cbramod-base": (
        _CBRAMOD_CONV_PUBLISHED, 12, 8, 800, 200,
        "CBraMod, published size (4.9 M parameters; pair with pretrained weights)",
    ),
}


def _build_cbramod(preset: BackbonePreset, n_outputs: int) -> nn.Module:
    CBraMod = _braindecode_model("CBraMod")
    conv, n_layer, nhead, dim_feedforward, emb_dim, _ = _CBRAMOD_SIZES[preset.name]
    contract = preset.eeg_contract()
    # Not passed through Opacus's ModuleValidator.fix: its DPMultiheadAttention changes
    # CBraMod's outputs (batch_first). The attention stays frozen; LoRA sits on the
    # feed-forward layers, which Opacus's hooks handle (4-D inputs included).
    return CBraMod(
        n_outputs=n_outputs,
        n_chans=contract.n_chans,
        n_times=contract.n_times,
        sfreq=contract.sfreq,
        patch_size=200,
        dim_feedforward=dim_feedforward,
        n_layer=n_layer,
        nhead=nhead,
        emb_dim=emb_dim,
        channels_kernel_stride_padding_norm=conv,
        drop_prob=0.1,
    )


_register_family(
    "cbramod",
    {name: size[-1] for name, size in _CBRAMOD_SIZES.items()},
    _build_cbramod,
    # self_attn_s/self_attn_t are nn.MultiheadAttention: their out_proj is applied
    # functionally (a LoRA there gets no gradient) and peft LoRA on the attention module
    # fails under Opacus. The feed-forward layers train.
    lora_targets=("linear1", "linear2", "proj_out.0"),
    head_modules=("final_layer",),
)
