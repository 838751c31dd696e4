"""What a coordinator run needs to know, and how the apps find it in simulation.

In deployment each site passes ``--node-config 'site-config="site.json"'`` to its SuperNode
and the coordinator passes ``--run-config 'launch="launch.json"'``. Flower's simulation
engine gives nodes only a partition id, so ``fedneuro simulate`` writes one launch file and
points both apps at it through ``FEDNEURO_LAUNCH`` (inherited by the Ray workers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fedneuro.atomic import write_text_atomic
from fedneuro.governance.site import SiteConfig

LAUNCH_ENV = "FEDNEURO_LAUNCH"


class LaunchError(RuntimeError):
    """The apps cannot tell which study, output or site they serve."""


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    study_path: Path
    out_dir: Path
    sites: list[SiteConfig] = Field(description="simulation only: the site of each partition id")
    resume: bool = Field(default=False, description="continue from the checkpoint in out_dir")


def write_launch(launch: Launch, path: Path) -> None:
    write_text_atomic(path, launch.model_dump_json(indent=2))


def read_launch(path: str | Path | None = None) -> Launch:
    location = path or os.environ.get(LAUNCH_ENV)
    if not location:
        raise LaunchError(
            f"no launch file: pass run config 'launch' or set {LAUNCH_ENV} "
            "(`fedneuro simulate` does this for you)"
        )
    try:
        return Launch.model_validate_json(Path(location).read_text(encoding="utf-8"))
    except OSError as error:
        raise LaunchError(f"cannot read launch file {location}: {error.strerror}") from error


def site_for_node(node_config: dict[str, object]) -> SiteConfig:
    """The site this node serves: its own site-config file, else its simulation partition."""
    if "site-config" in node_config:
        path = Path(str(node_config["site-config"]))
        try:
            return SiteConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except OSError as error:
            raise LaunchError(f"cannot read site config {path}: {error.strerror}") from error
    if "partition-id" not in node_config:
        raise LaunchError("node has neither 'site-config' nor a simulation 'partition-id' in its node config")
    launch = read_launch()
    index = int(node_config["partition-id"])  # type: ignore[call-overload]
    if not 0 <= index < len(launch.sites):
        raise LaunchError(f"partition {index} has no site in the launch file ({len(launch.sites)} sites)")
    return launch.sites[index]
