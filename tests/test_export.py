"""Merging a trained adapter into its backbone, model directories, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from typer.testing import CliRunner

from fedneuro.models.adapters import build_model, merge_adapter
from fedneuro.models.exchange import load_trainable_state, trainable_manifest, trainable_state
from fedneuro.models.export import ModelFileError, load_model_dir, read_model_card
from fedneuro.models.registry import get_backbone_preset, list_backbone_presets
from fedneuro.models.spec import ModelSpec
from fedneuro.study import Study, parse_study
from fedneuro.training.predict import export_study_model, load_study_model

PRESETS = [p.name for p in list_backbone_presets() if not p.name.endswith("-base")]

STUDY_TOML = """
[study]
id = "export-test"
seed = 5
{modality}
[{section}]
classes = {{ normal = 0, abnormal = 1 }}

[model]
backbone = "{backbone}"

[model.adapter]
rank = {rank}
"""


def make_study(tmp_path: Path, backbone: str = "biot-tiny", rank: int = 4) -> tuple[Study, Path]:
    mri = get_backbone_preset(backbone).modality == "mri"
    text = STUDY_TOML.format(backbone=backbone, rank=rank, modality='modality = "mri"\n' if mri else "",
                             section="mri" if mri else "data")
    path = tmp_path / f"study-{backbone}-{rank}.toml"
    path.write_text(text)
    return parse_study(text, source=str(path)), path


def trained_state(model, seed: int = 0) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """A stand-in for training: every adapter tensor moved (so the merge changes weights)."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0, 0.05, v.shape)).astype(v.dtype) for k, v in trainable_state(model.module).items()}


def save_trained_adapter(study: Study, path: Path, **provenance: object) -> dict[str, np.ndarray]:
    """What the coordinator writes (fedneuro.federation.results.save_adapter)."""
    model = build_model(study.model, n_outputs=2, seed=study.study.seed)
    state = trained_state(model)
    meta = {"study_id": study.study.id, "study_digest": study.digest(), "round": 3,
            "backbone": study.model.backbone, "weights_sha256": model.weights_sha256,
            "tensor_manifest_sha256": trainable_manifest(model.module).digest(), **provenance}
    save_file(state, str(path), metadata={"provenance": json.dumps(meta)})
    return state


def _inputs(preset: str, n: int = 3) -> torch.Tensor:
    return torch.randn(n, *get_backbone_preset(preset).input_shape, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("preset", PRESETS)
def test_merged_model_computes_what_the_adapted_model_computes(preset: str) -> None:
    model = build_model(ModelSpec(backbone=preset), n_outputs=2, seed=0)
    load_trainable_state(model.module, trained_state(model))
    x = _inputs(preset)
    with torch.no_grad():
        expected = model.module.eval()(x)
        merged = merge_adapter(model)
        got = merged(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    plain = get_backbone_preset(preset)
    with torch.random.fork_rng():
        keys = set(plain.build(plain, 2).state_dict())
    assert set(merged.state_dict()) == keys  # loadable without peft
    assert not any(p.requires_grad for p in merged.parameters())


def test_head_only_adapter_merges_to_the_plain_backbone() -> None:
    from fedneuro.models.spec import AdapterSpec

    model = build_model(ModelSpec(backbone="biot-tiny", adapter=AdapterSpec(kind="head")), n_outputs=2, seed=0)
    load_trainable_state(model.module, trained_state(model))
    x = _inputs("biot-tiny")
    with torch.no_grad():
        expected = model.module.eval()(x)
        torch.testing.assert_close(merge_adapter(model)(x), expected)


@pytest.mark.parametrize("backbone", ["biot-tiny", "mri-resnet-tiny"])
def test_export_writes_a_model_dir_that_loads_and_matches(tmp_path: Path, backbone: str) -> None:
    study, _ = make_study(tmp_path, backbone)
    adapter = tmp_path / "global_adapter.safetensors"
    state = save_trained_adapter(study, adapter)
    card = export_study_model(study, adapter, tmp_path / "model")
    assert card.preset == backbone and card.class_names == ["normal", "abnormal"]
    assert card.provenance["round"] == 3 and card.study_id == "export-test"
    assert card.modality == get_backbone_preset(backbone).modality
    assert read_model_card(tmp_path / "model") == card
    loaded = load_model_dir(tmp_path / "model")

    reference = build_model(study.model, n_outputs=2, seed=5)
    load_trainable_state(reference.module, state)
    x = _inputs(backbone)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), reference.module.eval()(x), rtol=1e-4, atol=1e-4)
        in_memory = load_study_model(study, adapter)
        torch.testing.assert_close(in_memory.module(x), loaded.module(x))


def test_adapter_for_another_model_is_refused_with_every_difference(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path, "biot-tiny", rank=4)
    other, _ = make_study(tmp_path, "biot-tiny", rank=2)
    adapter = tmp_path / "rank2.safetensors"
    save_trained_adapter(other, adapter, backbone="biot-small", study_id="another-study")
    with pytest.raises(ModelFileError) as caught:
        export_study_model(study, adapter, tmp_path / "model")
    message = str(caught.value)
    assert "backbone: study has 'biot-tiny', adapter was trained on 'biot-small'" in message
    assert "study id: study file is 'export-test', adapter is from 'another-study'" in message
    assert "tensor manifest" in message and "shape" in message
    assert "Use the study file the adapter was trained with" in message
    assert not (tmp_path / "model").exists()


def test_bound_manifest_in_the_provenance_is_compared(tmp_path: Path) -> None:
    from fedneuro.models.exchange import exchange_manifest

    study, _ = make_study(tmp_path)
    adapter = tmp_path / "a.safetensors"
    other_seed = build_model(study.model, n_outputs=2, seed=6)
    save_trained_adapter(study, adapter, exchange_manifest=exchange_manifest(other_seed).to_json())
    with pytest.raises(ModelFileError, match="seed: study has 5, adapter sent 6"):
        export_study_model(study, adapter, tmp_path / "m")
    same = build_model(study.model, n_outputs=2, seed=5)
    save_trained_adapter(study, adapter, exchange_manifest=exchange_manifest(same).model_dump(mode="json"))
    assert export_study_model(study, adapter, tmp_path / "m").preset == "biot-tiny"


def test_missing_or_unreadable_inputs_have_clear_errors(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path)
    with pytest.raises(ModelFileError, match="adapter file .*none.safetensors does not exist"):
        export_study_model(study, tmp_path / "none.safetensors", tmp_path / "m")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        export_study_model(study, junk, tmp_path / "m")
    with pytest.raises(ModelFileError, match=r"does not exist: create it with `fedneuro model export"):
        load_model_dir(tmp_path / "no-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="model.json is missing"):
        load_model_dir(tmp_path / "empty")


def test_tampered_or_occupied_model_dir_is_refused(tmp_path: Path) -> None:
    study, _ = make_study(tmp_path)
    adapter = tmp_path / "a.safetensors"
    save_trained_adapter(study, adapter)
    export_study_model(study, adapter, tmp_path / "model")
    with pytest.raises(ModelFileError, match="is not empty: choose another --out or pass --force"):
        export_study_model(study, adapter, tmp_path / "model")
    export_study_model(study, adapter, tmp_path / "model", overwrite=True)
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ModelFileError, match="does not match .*model.json .*export again"):
        load_model_dir(tmp_path / "model")


def test_cli_export(tmp_path: Path) -> None:
    from fedneuro.cli.main import app

    study, study_path = make_study(tmp_path)
    adapter = tmp_path / "a.safetensors"
    save_trained_adapter(study, adapter)
    runner = CliRunner()
    result = runner.invoke(app, ["model", "export", "--study", str(study_path), "--adapter", str(adapter),
                                 "--out", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["preset"] == "biot-tiny" and payload["model_sha256"]
    result = runner.invoke(app, ["model", "export", "--study", str(study_path), "--adapter",
                                 str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "m2")])
    assert result.exit_code == 2
    assert "does not exist" in " ".join(result.output.split())
