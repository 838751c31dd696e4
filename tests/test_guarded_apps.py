"""Only fedneuro's installed apps run at a site or the coordinator, whatever an app submitted
to the (unauthenticated) Control API carries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fedneuro.deploy.guarded_apps import SubmittedAppRefused, check_submitted_app, install_guards
from fedneuro.deploy.runtime import write_study_app


def test_the_app_fedneuro_run_submits_passes(tmp_path: Path) -> None:
    app = write_study_app(tmp_path / "app", "[study]\nid = 'x'\n", resume=False)
    check_submitted_app(app, component="clientapp", expected="client.app:app")
    check_submitted_app(app, component="serverapp", expected="server.app:app")


@pytest.mark.parametrize("extra", ["client/app.py", "client/__init__.py", "evil.py", "sub/pyproject.toml", "README.md"])
def test_an_app_carrying_files_is_refused(tmp_path: Path, extra: str) -> None:
    app = write_study_app(tmp_path / "app", "", resume=False)
    (app / extra).parent.mkdir(parents=True, exist_ok=True)
    (app / extra).write_text("import os\n")
    with pytest.raises(SubmittedAppRefused, match=rf"carries files \({extra}\); this party runs only the fedneuro it installed"):
        check_submitted_app(app, component="clientapp", expected="client.app:app")


def test_an_app_naming_another_component_is_refused(tmp_path: Path) -> None:
    app = write_study_app(tmp_path / "app", "", resume=False)
    text = (app / "pyproject.toml").read_text().replace('clientapp = "client.app:app"', 'clientapp = "os:system"')
    (app / "pyproject.toml").write_text(text)
    with pytest.raises(SubmittedAppRefused, match=r"names clientapp 'os:system'; only fedneuro's 'client.app:app' runs here"):
        check_submitted_app(app, component="clientapp", expected="client.app:app")
    (app / "pyproject.toml").write_text("not toml [")
    with pytest.raises(SubmittedAppRefused, match="names no clientapp"):
        check_submitted_app(app, component="clientapp", expected="client.app:app")


def test_the_guards_shadow_flowers_commands_on_the_path(tmp_path: Path) -> None:
    from fedneuro.deploy.runtime import flower_env

    bin_dir = install_guards(tmp_path / "bin")
    env = flower_env(guards=bin_dir)
    for name in ("flwr-clientapp", "flwr-serverapp"):
        found = subprocess.run(["sh", "-c", f"command -v {name}"], env=env, capture_output=True, text=True, check=True)
        assert found.stdout.strip() == str(bin_dir / name)
        assert os.access(bin_dir / name, os.X_OK)
        helped = subprocess.run([name, "--help"], env=env, capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0 and "--token" in helped.stdout  # Flower's own CLI, behind the guard
