"""`fedneuro model`: backbone presets, exporting a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, console, out_console, print_json, user_errors

app = typer.Typer(help="Backbones and adapters.", no_args_is_help=True)


def _preset_row(name: str) -> dict[str, Any]:
    from fedneuro.models.adapters import build_model, model_footprint
    from fedneuro.models.registry import get_backbone_preset
    from fedneuro.models.spec import ModelSpec

    preset = get_backbone_preset(name)
    footprint = model_footprint(build_model(ModelSpec(backbone=name), n_outputs=2, seed=0))
    return {
        "name": preset.name, "family": preset.family, "modality": preset.modality,
        "description": preset.description, "contract": preset.contract.model_dump(mode="json"),
        "input": preset.describe_contract(), "input_shape": list(preset.input_shape),
        "parameters": footprint.backbone_parameters,
        "trainable_parameters": footprint.trainable_parameters,
        "adapter_bytes": footprint.adapter_bytes, "backbone_bytes": footprint.backbone_bytes,
        "adapter_backbone_ratio": footprint.ratio,
        "lora_targets": list(preset.lora_targets), "head_modules": list(preset.head_modules),
    }


@app.command("list")
def list_presets(json_output: bool = JSON_OPTION) -> None:
    """Every backbone preset: modality, input contract, parameters, adapter vs backbone size
    (adapter = LoRA r=8 + head, 2 classes; bytes in fp32)."""
    from fedneuro.models.registry import list_backbone_presets

    with console.status("building every preset to measure it"):
        rows = [_preset_row(p.name) for p in list_backbone_presets()]
    if json_output:
        print_json(rows)
        return
    table = Table(title="Backbone presets (adapter = LoRA r=8 + head, 2 classes, fp32)")
    for column in ("name", "modality", "input", "parameters", "trainable", "adapter", "backbone", "ratio"):
        table.add_column(column, justify="right" if column in ("parameters", "trainable", "adapter", "backbone", "ratio") else "left")
    for r in rows:
        table.add_row(
            r["name"], r["modality"], r["input"], f"{r['parameters']:,}", f"{r['trainable_parameters']:,}",
            _bytes(r["adapter_bytes"]), _bytes(r["backbone_bytes"]), f"{100 * r['adapter_backbone_ratio']:.2f}%",
        )
    out_console.print(table)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


@app.command("export")
def export(
    study_path: Path = typer.Option(..., "--study", help="the study file the adapter was trained with"),
    adapter: Path = typer.Option(..., "--adapter", help="trained adapter (.safetensors, e.g. "
                                 "global_adapter.safetensors from `fedneuro simulate`)"),
    out: Path = typer.Option(..., "--out", help="model directory to write (model.safetensors + model.json)"),
    force: bool = typer.Option(False, "--force", help="overwrite a non-empty --out directory"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Merge the LoRA adapter into the backbone and write a standalone model directory."""
    from fedneuro.models.export import ModelFileError
    from fedneuro.models.manifest import ExchangeError
    from fedneuro.models.weights import WeightsError
    from fedneuro.study import StudyFileError, load_study
    from fedneuro.training.predict import export_study_model

    with user_errors(StudyFileError, ModelFileError, ExchangeError, WeightsError):
        study = load_study(study_path)
        with console.status(f"merging {adapter.name} into {study.model.backbone}"):
            card = export_study_model(study, adapter, out, overwrite=force)
    if json_output:
        print_json({"model_dir": str(out), **card.model_dump(mode="json")})
        return
    out_console.print(
        f"wrote [bold]{escape(str(out))}[/]: {card.preset} ({card.modality}), classes "
        f"{', '.join(card.class_names)}; model sha256 {card.model_sha256[:12]}…"
    )
