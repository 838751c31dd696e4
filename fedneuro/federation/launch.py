"""What a coordinator run needs to know, and how the apps find it.

Deployment: each site's SuperNode gets ``--node-config 'site-config="site.toml"'``;
``fedneuro run`` sends the study file's text in the run config (``study-toml``) and the
ServerApp, started by the coordinator's SuperLink, finds the coordinator's state folder
through ``FEDNEURO_COORDINATOR`` (set by ``fedneuro server start``, inherited by the
ServerApp process). Simulation: Flower gives nodes only a partition id, so ``fedneuro
simulate`` writes one launch file and points both apps at it through ``FEDNEURO_LAUNCH``
(inherited by the Ray workers).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedneuro.atomic import write_text_atomic
from fedneuro.governance.site import SiteConfig

LAUNCH_ENV = "FEDNEURO_LAUNCH"
_Model = TypeVar("_Model", bound=BaseModel)
COORDINATOR_ENV = "FEDNEURO_COORDINATOR"


class LaunchError(RuntimeError):
    """The apps cannot tell which study, output or site they serve."""


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    study_path: Path
    out_dir: Path
    sites: list[SiteConfig] = Field(default_factory=list, description="simulation only: the site of each partition id")
    expected_sites: int | None = Field(
        default=None, ge=1, description="deployment: sites of the consortium (simulation: len(sites))"
    )
    resume: bool = Field(default=False, description="continue from the checkpoint in out_dir")
    signing_key: Path | None = Field(
        default=None, description="the coordinator's Ed25519 key: signs its audit log (coordinator.audit.jsonl)"
    )
    study_signature: str | None = Field(
        default=None, description="the coordinator's signature of the study (STUDY.sig, JSON), sent to every site"
    )

    @property
    def n_sites(self) -> int:
        return self.expected_sites or len(self.sites)


class CoordinatorConfig(BaseModel):
    """What ``fedneuro server start`` tells the ServerApps its SuperLink starts."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(description="writable: one folder per study (checkpoint, adapter, summary)")
    sites: list[str] = Field(min_length=1, description="the consortium's sites (from the coordinator kit)")
    signing_key: Path | None = Field(default=None, description="the coordinator's Ed25519 signing key (kit)")

    def study_dir(self, study_id: str) -> Path:
        return self.state_dir / "studies" / study_id


def read_coordinator_config(path: str | Path | None = None) -> CoordinatorConfig:
    location = path or os.environ.get(COORDINATOR_ENV)
    if not location:
        raise LaunchError(
            f"no coordinator configuration: {COORDINATOR_ENV} is not set; start the SuperLink with "
            "`fedneuro server start`, which sets it for the ServerApp"
        )
    return _read_json_model(CoordinatorConfig, location, what="coordinator configuration")


def launch_for_run(run_config: dict[str, object]) -> Launch:
    """The ServerApp's launch: a deployed run carries the study text; a simulation a launch file."""
    study_text = str(run_config.get("study-toml") or "")
    if not study_text:
        return read_launch(str(run_config.get("launch") or "") or None)
    from fedneuro.study import parse_study  # noqa: PLC0415 - keeps this module light for the ClientApp

    study = parse_study(study_text, source="study-toml of the submitted run")
    coordinator = read_coordinator_config()
    out_dir = coordinator.study_dir(study.study.id)
    study_path = out_dir / "study.toml"
    write_text_atomic(study_path, study_text)
    return Launch(
        study_path=study_path,
        out_dir=out_dir,
        expected_sites=len(coordinator.sites),
        resume=bool(run_config.get("resume", False)),
        signing_key=coordinator.signing_key,
        study_signature=str(run_config.get("study-signature") or "") or None,
    )


def write_launch(launch: Launch, path: Path) -> None:
    write_text_atomic(path, launch.model_dump_json(indent=2))


def read_launch(path: str | Path | None = None) -> Launch:
    location = path or os.environ.get(LAUNCH_ENV)
    if not location:
        raise LaunchError(
            f"no launch file: pass run config 'launch' or set {LAUNCH_ENV} "
            "(`fedneuro simulate` does this for you)"
        )
    return _read_json_model(Launch, location, what="launch file")


def _read_json_model(model: type[_Model], location: str | Path, *, what: str) -> _Model:
    try:
        return model.model_validate_json(Path(location).read_text(encoding="utf-8"))
    except OSError as error:
        raise LaunchError(f"cannot read {what} {location}: {error.strerror}") from error
    except (ValidationError, UnicodeDecodeError) as error:
        raise LaunchError(f"{what} {location} is not valid: {error}") from None


def site_for_node(node_config: dict[str, object]) -> SiteConfig:
    """The site this node serves: its own site-config file, else its simulation partition."""
    if "site-config" in node_config:
        return load_site_config(Path(str(node_config["site-config"])))
    if "partition-id" not in node_config:
        raise LaunchError("node has neither 'site-config' nor a simulation 'partition-id' in its node config")
    launch = read_launch()
    index = int(node_config["partition-id"])  # type: ignore[call-overload]
    if not 0 <= index < len(launch.sites):
        raise LaunchError(f"partition {index} has no site in the launch file ({len(launch.sites)} sites)")
    return launch.sites[index]


def load_site_config(path: Path) -> SiteConfig:
    """A site's configuration file: TOML (what operators write) or JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise LaunchError(f"cannot read site config {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise LaunchError(f"site config {path} is not UTF-8 text ({error}); save it as UTF-8") from None
    kind = path.suffix.lstrip(".").upper() or "JSON"
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise LaunchError(f"site config {path} is not valid {kind}: {error}") from None
    except RecursionError:
        raise LaunchError(f"site config {path} is not valid {kind}: nested too deeply") from None
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors())
        raise LaunchError(f"site config {path}: {problems}") from None
