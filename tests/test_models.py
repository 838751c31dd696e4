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

PRESETS = [p.name for p in list_backbone_presets() if not p.name.endswith("-base")]


def _batch(preset_name: str, n: int = 4) -> torch.Tensor:
    contract = get_backbone_preset(preset_name).contract
    return torch.randn(n, contract.n_chans, contract.n_times, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_adapter_tensor_receives_a_gradient(preset: str) -> None:
    model = build_model(ModelSpec(backbone=preset), n_outputs=2, seed=0)
    # LoRA's B starts at zero, which zeroes A's gradient at step 0 by design; give B a value
    # so a zero gradient can only mean the layer is bypassed (functional attention paths).
    with torch.no_grad():
        for name, p in model.trainable_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    loss = torch.nn.functional.cross_entropy(model.module(_batch(preset)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    names = [n for n, _ in model.trainable_parameters()]
    without = [n for n, p in model.trainable_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == []
    head = get_backbone_preset(preset).head_modules
    assert any("lora_A" in n for n in names) and any(h in n for n in names for h in head)
    frozen_with_grad = [n for n, p in model.module.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []


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

    partial = tmp_path / "partial.safetensors"
    state = {k: v.contiguous() for k, v in donor.state_dict().items()}
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(partial))
    with pytest.raises(WeightsError, match=r"missing keys \(1\).*\n.*unexpected keys \(1\): extra.weight"):
        build_model(ModelSpec(backbone="biot-tiny", weights=partial), n_outputs=2, seed=0)
    with pytest.raises(WeightsError, match="does not exist"):
        build_model(ModelSpec(backbone="biot-tiny", weights=tmp_path / "none.pt"), n_outputs=2, seed=0)
