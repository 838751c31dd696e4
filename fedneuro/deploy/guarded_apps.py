"""Run only the fedneuro apps installed here, whatever a submitted Flower app carries.

Flower's Control API is unauthenticated and Flower 1.42 runs the code inside a submitted app
(its folder goes first on the import path): anyone who reaches the SuperLink could replace
the ClientApp at every site with their own code, which would then never run the site's
governance gate. `fedneuro site start` / `server start` therefore put these wrappers first on
the PATH under the names Flower's SuperExec launches (``flwr-clientapp``, ``flwr-serverapp``):
they refuse a submitted app that holds anything but its ``pyproject.toml`` or names other
components, and then run the *installed* ``client.app:app`` / ``server.app:app``.

Flower has no public hook for this; the wrappers replace the loader that Flower's own
``flwr-clientapp``/``flwr-serverapp`` use (a documented, tested dependency on flwr 1.42).
"""

from __future__ import annotations

import stat
import sys
import tomllib
from pathlib import Path

CLIENT_APP_REF = "client.app:app"
SERVER_APP_REF = "server.app:app"
ALLOWED_FILES = frozenset({"pyproject.toml"})


class SubmittedAppRefused(ValueError):
    """A submitted Flower app that carries code or names other apps than fedneuro's."""


def check_submitted_app(app_dir: Path, *, component: str, expected: str) -> None:
    """Refuse unless ``app_dir`` holds only a pyproject naming fedneuro's installed apps."""
    app_dir = Path(app_dir)
    extra = sorted(str(p.relative_to(app_dir)) for p in app_dir.rglob("*")
                   if p.is_file() and (p.parent != app_dir or p.name not in ALLOWED_FILES))
    if extra:
        shown = ", ".join(extra[:5]) + (" …" if len(extra) > 5 else "")
        raise SubmittedAppRefused(
            f"the submitted app carries files ({shown}); this party runs only the fedneuro it installed, "
            "so a study must be submitted with `fedneuro run` (a pyproject.toml and nothing else)"
        )
    try:
        config = tomllib.loads((app_dir / "pyproject.toml").read_text(encoding="utf-8"))
        ref = config["tool"]["flwr"]["app"]["components"][component]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as error:
        raise SubmittedAppRefused(f"the submitted app's pyproject.toml names no {component}: {error}") from None
    if ref != expected:
        raise SubmittedAppRefused(f"the submitted app names {component} {ref!r}; only fedneuro's {expected!r} runs here")


def clientapp_main() -> None:
    """``flwr-clientapp`` that loads only the installed fedneuro ClientApp."""
    import flwr.supernode.runtime.run_clientapp as runtime
    from flwr.clientapp import ClientApp
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.common.config import get_project_dir
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    def loader(default_app_ref: str, app_path: str | None, multi_app: bool):  # type: ignore[no-untyped-def]
        def load(fab_id: str, fab_version: str, fab_hash: str) -> ClientApp:
            try:
                check_submitted_app(get_project_dir(fab_id, fab_version, fab_hash), component="clientapp",
                                    expected=CLIENT_APP_REF)
            except SubmittedAppRefused as error:
                raise LoadClientAppError(str(error)) from None
            from client.app import app  # noqa: PLC0415 - the installed package, never the submitted folder

            return app

        return load

    runtime.get_load_client_app_fn = loader  # type: ignore[assignment]
    flwr_clientapp()


def serverapp_main() -> None:
    """``flwr-serverapp`` that runs only the installed fedneuro ServerApp."""
    import importlib

    from flwr.serverapp.server_app import LoadServerAppError

    # The package re-exports a function of the same name; the module is what holds `run_`.
    runtime = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    original = runtime.run_

    def run(grid, context, server_app_dir, server_app_attr=None, loaded_server_app=None):  # type: ignore[no-untyped-def]
        try:
            check_submitted_app(Path(server_app_dir), component="serverapp", expected=SERVER_APP_REF)
        except SubmittedAppRefused as error:
            raise LoadServerAppError(str(error)) from None
        from server.app import app  # noqa: PLC0415 - the installed package

        return original(grid, context, server_app_dir, loaded_server_app=app)

    runtime.run_ = run  # type: ignore[assignment]
    flwr_serverapp()


def install_guards(bin_dir: Path) -> Path:
    """Write the two wrapper commands into ``bin_dir``; put it first on the PATH of the
    SuperNode/SuperLink so Flower's SuperExec launches them."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, entry in (("flwr-clientapp", "clientapp"), ("flwr-serverapp", "serverapp")):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fedneuro.deploy.guarded_apps {entry} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


if __name__ == "__main__":
    command = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    sys.argv[0] = f"flwr-{command}"
    {"clientapp": clientapp_main, "serverapp": serverapp_main}.get(command, lambda: sys.exit(f"unknown app {command!r}"))()
