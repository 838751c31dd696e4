"""Backbone presets, adapters and the exchanged state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fedneuro.models.adapters import build_model
from fedneuro.models.exchange import load_trainable_state, trainable_manifest, trainable_state
from fedneuro.models.manifest import ExchangeError
from fedneuro.models.registry import get_backbone_preset, list_backbone_presets
from fedneuro.models.spec import AdapterSpec, ModelSpec
from fedneuro.models.weights import WeightsError
from fedneuro.privacy.engine import UnitDPOptimizer

PRESETS = [p.name for p in list_backbone_presets() if not p.name.endswith("-base")]


def _batch(preset_name: str, n: int = 4) -> torch.Tensor:
    shape = get_backbone_preset(preset_name).input_shape
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))


def _nonzero_lora_b(model) -> None:  # type: ignore[no-untyped-def]
    # LoRA's B starts at zero, which zeroes A's gradient at step 0 by design; give B a value
    # so a zero gradient can only mean the layer is bypassed (functional attention paths).
    with torch.no_grad():
        for name, p in model.trainable_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_adapter_tensor_receives_a_gradient(preset: str) -> None:
    model = build_model(ModelSpec(backbone=preset), n_outputs=2, seed=0)
    _nonzero_lora_b(model)
    loss = torch.nn.functional.cross_entropy(model.module(_batch(preset)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    names = [n for n, _ in model.trainable_parameters()]
    without = [n for n, p in model.trainable_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == []
    head = get_backbone_preset(preset).head_modules
    assert any("lora_A" in n for n in names) and any(h in n for n in names for h in head)
    frozen_with_grad = [n for n, p in model.module.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("preset", PRESETS)
def test_every_adapter_tensor_moves_in_one_participant_level_dp_step(preset: str) -> None:
    """Opacus computes a per-sample gradient for every adapter tensor (no bypassed layer,
    no layer Opacus refuses) and a noiseless DP step moves each of them."""
    model = build_model(ModelSpec(backbone=preset), n_outputs=2, seed=0)
    _nonzero_lora_b(model)
    before = {n: p.detach().clone() for n, p in model.trainable_parameters()}
    model.module.train()
    optimizer = torch.optim.SGD([p for _, p in model.trainable_parameters()], lr=0.1)
    engine = UnitDPOptimizer(model.module, optimizer, noise_multiplier=0.0, max_grad_norm=1.0,
                             expected_units_per_step=3, noise_seed=0)
    try:
        # 3 participants x 2 windows; the engine itself raises when a tensor has no
        # per-sample gradient or does not move (Opacus issue #820).
        loss = engine.step(_batch(preset, 6), torch.tensor([0, 0, 1, 1, 0, 0]),
                           torch.tensor([0, 0, 1, 1, 2, 2]), 3)
    finally:
        engine.close()
    assert loss is not None and np.isfinite(loss)
    unmoved = [n for n, p in model.trainable_parameters() if torch.equal(p.detach(), before[n])]
    assert unmoved == []


def test_presets_declare_modality_and_matching_contract() -> None:
    from fedneuro.data.mri_spec import MRIContract
    from fedneuro.data.spec import InputContract
    from fedneuro.models.registry import BackbonePreset

    for preset in list_backbone_presets():
        assert preset.modality in ("eeg", "mri")
        expected = MRIContract if preset.modality == "mri" else InputContract
        assert isinstance(preset.contract, expected), preset.name
        assert preset.lora_targets and preset.head_modules
    families = {p.family for p in list_backbone_presets()}
    assert {"biot", "labram", "cbramod", "mri-resnet", "mri-vit"} <= families
    mri = get_backbone_preset("mri-resnet-tiny")
    assert mri.input_shape == (1, 32, 32, 32)
    with pytest.raises(ValueError, match="'mri-resnet-tiny' takes MRI volumes.*choose an EEG backbone"):
        mri.eeg_contract()
    with pytest.raises(ValueError, match="'biot-tiny' takes EEG windows"):
        get_backbone_preset("biot-tiny").mri_contract()
    with pytest.raises(ValueError, match="modality 'mri', so its contract must be an MRIContract"):
        BackbonePreset(name="x", family="x", description="", contract=get_backbone_preset("biot-tiny").contract,
                       lora_targets=("a",), head_modules=("b",), build=lambda p, n: None, modality="mri")  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("preset", [p.name for p in list_backbone_presets()])
def test_no_preset_has_batchnorm_anywhere(preset: str) -> None:
    """BatchNorm in train mode mixes a batch's samples even when frozen, which breaks
    per-participant DP; Opacus's validator looks at trainable layers only and misses it."""
    spec = get_backbone_preset(preset)
    with torch.random.fork_rng():
        backbone = spec.build(spec, 2)
    found = [n for n, m in backbone.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert found == []


def test_mri_resnet_lora_wraps_conv3d() -> None:
    model = build_model(ModelSpec(backbone="mri-resnet-tiny"), n_outputs=2, seed=0)
    lora_convs = [n for n, m in model.module.named_modules() if isinstance(m, torch.nn.Conv3d) and "lora_A" in n]
    assert lora_convs, "LoRA should wrap the Conv3d targets"


def test_only_adapter_and_head_are_trainable() -> None:
    model = build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=0)
    for name in trainable_state(model.module):
        assert "lora_" in name or "classification_head" in name, name
    head_only = build_model(ModelSpec(backbone="biot-tiny", adapter=AdapterSpec(kind="head")), n_outputs=2, seed=0)
    assert all("classification_head" in n for n in trainable_state(head_only.module))


def test_same_seed_same_model_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = trainable_state(build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=5).module)
    assert torch.equal(torch.rand(1), expected_next)
    b = trainable_state(build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=5).module)
    c = trainable_state(build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=6).module)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a if "lora_A" in k)


def test_exchange_roundtrip_and_mismatch_refused() -> None:
    model = build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=0)
    state = trainable_state(model.module)
    changed = {k: v + 1 for k, v in state.items()}
    load_trainable_state(model.module, changed)
    assert all(np.array_equal(trainable_state(model.module)[k], changed[k]) for k in state)
    first = next(iter(state))
    with pytest.raises(ExchangeError, match="missing tensors"):
        load_trainable_state(model.module, {k: v for k, v in state.items() if k != first})
    with pytest.raises(ExchangeError, match="shape"):
        load_trainable_state(model.module, {**state, first: np.zeros((1, 1), np.float32)})
    bad = state[first].copy()
    bad.flat[0] = np.nan
    with pytest.raises(ExchangeError, match="NaN or Inf"):
        load_trainable_state(model.module, {**state, first: bad})
    assert trainable_manifest(model.module).nbytes == sum(v.nbytes for v in state.values())


def test_unknown_preset_and_target_have_clear_errors() -> None:
    with pytest.raises(ValueError, match="Registered presets: .*biot-small"):
        get_backbone_preset("nope")
    with pytest.raises(ValueError, match=r"'adapter.targets'.*\['qkv'\]"):
        build_model(ModelSpec(backbone="biot-tiny", adapter=AdapterSpec(targets=["qkv"])), n_outputs=2, seed=0)


def test_local_weights_load_strictly_and_are_hashed(tmp_path) -> None:
    preset = get_backbone_preset("biot-tiny")
    with torch.random.fork_rng():
        torch.manual_seed(99)
        donor = preset.build(preset, 2)
    path = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    model = build_model(ModelSpec(backbone="biot-tiny", weights=path), n_outputs=2, seed=0)
    assert model.weights_sha256 is not None and len(model.weights_sha256) == 64
    loaded = dict(model.module.named_parameters())
    key = next(k for k in loaded if k.endswith("to_q.base_layer.weight"))
    donor_key = key.replace("base_model.model.", "").replace(".base_layer", "")
    assert torch.equal(loaded[key], donor.state_dict()[donor_key])
    # A checkpoint's head (another number of classes, or none) is not loaded: the study's is fresh.
    three = build_model(ModelSpec(backbone="biot-tiny", weights=path), n_outputs=3, seed=0)
    assert three.weights_sha256 == model.weights_sha256

    partial = tmp_path / "partial.safetensors"
    state = {k: v.contiguous() for k, v in donor.state_dict().items()}
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(partial))
    with pytest.raises(WeightsError, match=r"missing keys \(1\).*\n.*unexpected keys \(1\): extra.weight"):
        build_model(ModelSpec(backbone="biot-tiny", weights=partial), n_outputs=2, seed=0)
    with pytest.raises(WeightsError, match="does not exist"):
        build_model(ModelSpec(backbone="biot-tiny", weights=tmp_path / "none.pt"), n_outputs=2, seed=0)


def test_weights_from_a_model_directory_with_wrapped_keys(tmp_path) -> None:
    preset = get_backbone_preset("biot-tiny")
    with torch.random.fork_rng():
        torch.manual_seed(3)
        donor = preset.build(preset, 2)
    directory = tmp_path / "pretrained-biot"
    directory.mkdir()
    # As saved from a DataParallel / Lightning wrapper: every key prefixed.
    save_file({f"module.{k}": v.contiguous() for k, v in donor.state_dict().items()}, str(directory / "model.safetensors"))
    model = build_model(ModelSpec(backbone="biot-tiny", weights=directory), n_outputs=2, seed=0)
    loaded = dict(model.module.named_parameters())
    key = next(k for k in loaded if k.endswith("to_q.base_layer.weight"))
    assert torch.equal(loaded[key], donor.state_dict()[key.replace("base_model.model.", "").replace(".base_layer", "")])
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(WeightsError, match="holds none of model.safetensors"):
        build_model(ModelSpec(backbone="biot-tiny", weights=empty), n_outputs=2, seed=0)
