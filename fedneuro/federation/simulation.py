"""Run the study's ServerApp and ClientApps on Flower's simulation engine (Ray), in-process.

Chosen for the local consortium because Ray actors keep the imported code and the loaded
site data between rounds; a SuperLink + SuperNodes deployment starts a new ClientApp process
per message (about 12 s of imports each on 2 cores). The apps are the same in both.
"""

from __future__ import annotations

import logging
import os

import importlib

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedneuro.federation.launch import LAUNCH_ENV, Launch, write_launch

# Referenced by name, like pyproject's [tool.flwr.app.components]: fedneuro never imports
# the app packages.
SERVER_APP_REF = "server.app:app"
CLIENT_APP_REF = "client.app:app"


def run_local_simulation(launch: Launch, *, cpus: int | None = None) -> None:
    """Run one simulated consortium to completion; raises if the ServerApp failed."""
    from flwr.simulation import run_simulation

    launch_path = launch.out_dir / "launch.json"
    write_launch(launch, launch_path)
    os.environ[LAUNCH_ENV] = str(launch_path.resolve())
    # Inherited by the Ray workers: keep their output to what matters.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    cpus = cpus or os.cpu_count() or 1
    server_app = _load_component(SERVER_APP_REF, ServerApp)
    client_app = _load_component(CLIENT_APP_REF, ClientApp)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(launch.sites),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": cpus,
                "num_gpus": 0,
                "include_dashboard": False,
                "object_store_memory": 256 * 1024 * 1024,
                "logging_level": "error",
                "log_to_driver": True,
            },
        },
    )


def _load_component(reference: str, kind: type) -> object:
    module_name, _, attribute = reference.partition(":")
    component = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(component, kind):
        raise TypeError(f"{reference} is a {type(component).__name__}, expected a {kind.__name__}")
    return component
