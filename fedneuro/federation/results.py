"""The coordinator's record of a study run: summary.json and the saved global adapter."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from fedneuro import __version__
from fedneuro.atomic import write_text_atomic
from fedneuro.federation.rounds import RoundReport


def save_adapter(path: Path, state: Mapping[str, np.ndarray], provenance: Mapping[str, Any]) -> None:
    """Global adapter as safetensors (metadata = provenance) plus a readable JSON beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: np.ascontiguousarray(v) for k, v in state.items()},
        str(tmp),
        metadata={"provenance": json.dumps(provenance, sort_keys=True)},
    )
    os.replace(tmp, path)
    write_text_atomic(path.with_suffix(".json"), json.dumps(provenance, indent=2, sort_keys=True))


class StudyRecord:
    """Accumulates round reports (as JSON-ready dicts, so a resumed run can carry on the
    earlier rounds) and writes ``summary.json`` after every round."""

    def __init__(self, out_dir: Path, *, header: Mapping[str, Any], rounds: list[dict[str, Any]] | None = None) -> None:
        self.out_dir = out_dir
        self.header = dict(header)
        self.rounds: list[dict[str, Any]] = list(rounds or [])

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.json"

    @property
    def adapter_path(self) -> Path:
        return self.out_dir / "global_adapter.safetensors"

    def add(self, report: RoundReport) -> None:
        self.rounds.append(_round_dict(report))

    def summary(self, *, status: str, wall_time_s: float) -> dict[str, Any]:
        sites: dict[str, dict[str, Any]] = {}
        for report in self.rounds:
            for name, site in report["sites"].items():
                entry = sites.setdefault(
                    name, {"bytes_uploaded": 0, "bytes_uploaded_per_round": [], "dp_steps": 0}
                )
                entry["bytes_uploaded"] += site["bytes_uploaded"]
                entry["bytes_uploaded_per_round"].append(site["bytes_uploaded"])
                entry["dp_steps"] += site["dp_steps"]
                if site["num_examples"]:  # ε and δ are cumulative at the site: keep the latest
                    entry["epsilon"] = site["epsilon"]
                    entry["delta"] = site["delta"]
                    entry["epsilon_accountant"] = site["epsilon_accountant"]
                    entry["train_windows"] = site["num_examples"]
                    entry["privacy_units"] = site["privacy_units"]
                entry["balanced_accuracy"] = site["balanced_accuracy"]
                entry["test_windows"] = site["test_windows"]
                entry["test_participants"] = site["test_participants"]
        for entry in sites.values():
            entry.update(self.header.get("privacy_labels", {}))
        final = self.rounds[-1] if self.rounds else None
        return {
            "fedneuro_version": __version__,
            "status": status,
            **{k: v for k, v in self.header.items() if k != "privacy_labels"},
            "rounds": self.rounds,
            "final_balanced_accuracy": final["balanced_accuracy"] if final else None,
            "final_participant_balanced_accuracy": final["participant_balanced_accuracy"] if final else None,
            "sites": sites,
            "global_adapter": str(self.adapter_path) if final else None,
            "wall_time_s": wall_time_s,
        }

    def write(self, *, status: str, wall_time_s: float) -> None:
        write_text_atomic(
            self.summary_path,
            json.dumps(self.summary(status=status, wall_time_s=wall_time_s), indent=2, allow_nan=False, default=_nan_to_none),
        )


def _round_dict(report: RoundReport) -> dict[str, Any]:
    data = asdict(report)
    data["sites"] = {name: _clean(asdict(site)) for name, site in report.sites.items()}
    return _clean(data)


def _clean(value: Any) -> Any:
    """JSON has no NaN: missing numbers become null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _nan_to_none(value: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
