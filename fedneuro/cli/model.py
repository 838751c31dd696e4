"""`fedneuro model`: backbone presets."""

from __future__ import annotations

import typer
from rich.table import Table

from fedneuro.cli.common import JSON_OPTION, console, print_json

app = typer.Typer(help="Backbones and adapters.", no_args_is_help=True)


@app.command("list")
def list_presets(json_output: bool = JSON_OPTION) -> None:
    """Every backbone preset with its input contract and adapter size."""
    from fedneuro.models.adapters import build_model
    from fedneuro.models.registry import list_backbone_presets
    from fedneuro.models.spec import ModelSpec

    rows = []
    for preset in list_backbone_presets():
        model = build_model(ModelSpec(backbone=preset.name), n_outputs=2, seed=0)
        total = sum(p.numel() for p in model.module.parameters())
        trainable = sum(p.numel() for _, p in model.trainable_parameters())
        rows.append({
            "name": preset.name, "family": preset.family, "description": preset.description,
            "channels": list(preset.contract.channels), "sfreq": preset.contract.sfreq,
            "input_window_seconds": preset.contract.input_window_seconds,
            "parameters": total, "trainable_parameters": trainable,
            "adapter_bytes": trainable * 4, "backbone_bytes": (total - trainable) * 4,
            "lora_targets": list(preset.lora_targets),
        })
    if json_output:
        print_json(rows)
        return
    table = Table(title="Backbone presets (adapter = LoRA r=8 + head)")
    for column in ("name", "input", "parameters", "trainable", "adapter / backbone bytes"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], f"{len(r['channels'])} ch, {r['sfreq']:g} Hz, {r['input_window_seconds']:g} s",
                      f"{r['parameters']:,}", f"{r['trainable_parameters']:,}",
                      f"{r['adapter_bytes'] / r['backbone_bytes']:.3f}")
    console.print(table)
