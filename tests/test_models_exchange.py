"""The exchange manifest binds tensors to a model; both ends refuse a mismatched model."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from fedneuro.models.adapters import build_model, model_footprint
from fedneuro.models.exchange import check_exchange_manifest, exchange_manifest, model_binding, trainable_manifest
from fedneuro.models.manifest import ExchangeError, TensorManifest
from fedneuro.models.registry import get_backbone_preset
from fedneuro.models.spec import AdapterSpec, ModelSpec


@pytest.fixture(scope="module")
def site_model():  # type: ignore[no-untyped-def]
    return build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=3)


def test_bound_manifest_roundtrips_as_json_and_matches_itself(site_model) -> None:  # type: ignore[no-untyped-def]
    manifest = exchange_manifest(site_model)
    assert manifest.model is not None
    assert manifest.model.backbone == "biot-tiny" and manifest.model.seed == 3
    assert manifest.model.weights_sha256 is None and manifest.model.n_outputs == 2
    assert manifest.model.adapter["rank"] == 8
    text = manifest.to_json()
    assert TensorManifest.from_json(text) == manifest
    again = build_model(ModelSpec(backbone="biot-tiny"), n_outputs=2, seed=3)
    assert check_exchange_manifest(again, text) == manifest
    assert manifest.names == trainable_manifest(site_model.module).names


def test_unbound_digest_is_unchanged_by_the_binding_field(site_model) -> None:  # type: ignore[no-untyped-def]
    unbound = trainable_manifest(site_model.module)
    legacy = hashlib.sha256(json.dumps({"tensors": unbound.model_dump(mode="json")["tensors"]},
                                       sort_keys=True).encode()).hexdigest()
    assert unbound.digest() == legacy
    assert exchange_manifest(site_model).digest() != legacy


def test_mismatched_backbone_is_refused_naming_both_ends(site_model) -> None:  # type: ignore[no-untyped-def]
    other = build_model(ModelSpec(backbone="biot-small"), n_outputs=2, seed=3)
    with pytest.raises(ExchangeError) as caught:
        check_exchange_manifest(other, exchange_manifest(site_model).to_json())
    message = str(caught.value)
    assert "backbone: site has 'biot-small', coordinator sent 'biot-tiny'" in message
    assert "tensors" in message and "same study file" in message


def test_every_binding_difference_is_listed(site_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    preset = get_backbone_preset("biot-tiny")
    with torch.random.fork_rng():
        donor = preset.build(preset, 2)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(weights))
    other = build_model(ModelSpec(backbone="biot-tiny", weights=weights, adapter=AdapterSpec(rank=4)),
                        n_outputs=3, seed=4)
    problems = exchange_manifest(site_model).differences(exchange_manifest(other), local="coordinator", remote="site")
    joined = "\n".join(problems)
    assert "weights_sha256: coordinator has None (random initialisation), site sent" in joined
    assert "adapter.rank: coordinator has 8, site sent 4" in joined
    assert "n_outputs: coordinator has 2, site sent 3" in joined
    assert "seed: coordinator has 3, site sent 4" in joined
    assert any("sent (4, " in p or "(8, " in p for p in problems)  # LoRA shapes differ too
    assert [p.split(":")[0] for p in problems[:4]] == ["weights_sha256", "adapter.rank", "n_outputs", "seed"]


def test_unbound_or_malformed_manifest_is_refused(site_model) -> None:  # type: ignore[no-untyped-def]
    unbound = trainable_manifest(site_model.module).to_json()
    with pytest.raises(ExchangeError, match="model binding: coordinator has none"):
        check_exchange_manifest(site_model, unbound)
    with pytest.raises(ExchangeError, match="manifest from coordinator is not a valid exchange manifest"):
        check_exchange_manifest(site_model, '{"tensors": 3}')
    with pytest.raises(ValueError, match="not made by fedneuro.models.adapters.build_model"):
        model_binding(type(site_model)(module=site_model.module, preset=site_model.preset, weights_sha256=None))


def test_footprint_counts_the_deployable_backbone_once(site_model) -> None:  # type: ignore[no-untyped-def]
    preset = get_backbone_preset("biot-tiny")
    with torch.random.fork_rng():
        plain = preset.build(preset, 2)
    footprint = model_footprint(site_model)
    assert footprint.backbone_parameters == sum(p.numel() for p in plain.parameters())
    assert footprint.adapter_bytes == trainable_manifest(site_model.module).nbytes
    assert footprint.ratio == footprint.adapter_bytes / footprint.backbone_bytes
