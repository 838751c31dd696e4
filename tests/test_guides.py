"""Every shell command in the operator guides runs, or is checked as far as it can be without a
live consortium or a Docker engine.

The guides (docs/site-operator.md, coordinator.md, ethics-board.md, threat-model.md) are read
block by block, in order: ```console blocks (`$ ` lines, with `\\` continuations and
heredocs) and ```bash blocks are commands; a ```toml block whose first line is `# PATH` is a
file the reader writes, and is written. Each guide runs in a folder of its own that holds
what its reader has received by then, made for real: a consortium provisioned with
`fedneuro provision`, a synthetic BIDS site (`fedneuro synth eeg`), a study signed with the
coordinator's key; for the site operator and the ethics board also a privacy ledger and an
audit log written with fedneuro's own writers (a federation that produces them takes minutes
and is tested in test_deployment.py). The example locations the site guide uses
(/etc/fedneuro, /archive/eeg-bids, /var/lib/fedneuro) are mapped into that folder, and
`fedneuro synth eeg` in the coordinator guide is scaled down to 6 participants of 10 s.

Executed: every command except the ones below, in bash with `set -eo pipefail`; it must exit
0, and output lines the guide shows after it must appear (`...` matches anything).

Validated only:
- `fedneuro server start`, `site start` (long-running servers), `fedneuro run`, `server resume`
  (need a live consortium), `fedneuro evaluate` (needs every site's data and a finished run):
  `--help` of the command lists every option used, the real CLI parser accepts the command
  line, and its kit, site configuration and study load as the command would load them;
- `docker ...` (no Docker engine here): Dockerfile, image tag (= package version), compose
  file, services, container paths inside the service's or container's mounts, the `fedneuro`
  command line inside the container parsed by the CLI, and configuration files mounted into a
  container loaded with its paths;
- `make setup`: `make -n setup` in the repository.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedneuro.cli.main import app
from test_deploy_files import (
    DEPLOY,
    REPO,
    VERSION,
    Dockerfile,
    container_config,
    load_compose,
    mount_for,
    mounts,
    parse_cli,
)

DOCS = REPO / "docs"
GUIDES = ("site-operator.md", "coordinator.md", "ethics-board.md", "threat-model.md")
LIVE = {("server", "start"), ("site", "start"), ("run",), ("server", "resume"), ("evaluate",)}
BIN = Path(sys.executable).parent
STUDY_ID = "demo-abnormal-eeg"


# --------------------------------------------------------------------------- reading the guides
@dataclass
class Step:
    guide: str
    line: int
    kind: str  # "command" or "file"
    text: str
    expected: list[str] = field(default_factory=list)
    path: str = ""

    def where(self) -> str:
        return f"docs/{self.guide}:{self.line}"


def _command_lines(lines: list[str], index: int) -> tuple[str, int]:
    """One command from lines[index] on (continuations, heredoc bodies); (text, next index)."""
    text = lines[index]
    index += 1
    while text.endswith("\\") and index < len(lines):
        text = text[:-1] + " " + lines[index].strip()
        index += 1
    heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", text)
    if heredoc:
        body = []
        while index < len(lines) and lines[index].strip() != heredoc.group(1):
            body.append(lines[index])
            index += 1
        text = "\n".join([text, *body, heredoc.group(1)])
        index += 1
    return text, index


def read_guide(name: str) -> list[Step]:
    lines = (DOCS / name).read_text(encoding="utf-8").splitlines()
    steps: list[Step] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        language, start = fence.group(1), i + 1
        end = start
        while not lines[end].startswith("```"):
            end += 1
        body = lines[start:end]
        assert language in {"console", "bash", "toml"}, \
            f"docs/{name}:{i + 1}: a ```{language} block; use console or bash for commands (they are tested), toml for files"
        if language == "toml":
            header = re.fullmatch(r"#\s*(\S+\.toml)", body[0].strip()) if body else None
            if header:
                steps.append(Step(name, start + 1, "file", "\n".join(body) + "\n", path=header.group(1)))
        elif language == "console":
            j = 0
            while j < len(body):
                if body[j].startswith("$ "):
                    text, after = _command_lines([body[j][2:], *body[j + 1:]], 0)
                    step = Step(name, start + j + 1, "command", text)
                    j += after
                    while j < len(body) and not body[j].startswith("$ "):
                        if body[j].strip():
                            step.expected.append(body[j].strip())
                        j += 1
                    steps.append(step)
                else:
                    assert not body[j].strip(), f"docs/{name}:{start + j + 1}: console output before any `$ ` command"
                    j += 1
        else:
            j = 0
            while j < len(body):
                if body[j].strip() and not body[j].lstrip().startswith("#"):
                    text, after = _command_lines(body[j:], 0)
                    steps.append(Step(name, start + j + 1, "command", text))
                    j += after
                else:
                    j += 1
        i = end + 1
    return steps


def mode_of(command: str) -> str:
    words = command.split()
    if words[0] in {"docker", "make"}:
        return "validated"
    if words[0] == "fedneuro" and any(tuple(words[1:1 + len(key)]) == key for key in LIVE):
        return "validated"
    return "executed"


# --------------------------------------------------------------------------- checks of validated commands
runner = CliRunner()


def check_fedneuro(argv: list[str], cwd: Path) -> None:
    """`--help` lists the options; the parser accepts the line; kit, config and study load."""
    from fedneuro.deploy.provision import load_kit
    from fedneuro.federation.launch import load_site_config
    from fedneuro.study import load_study

    command, ctx = parse_cli(argv)
    path = [w for w in argv[1:] if not w.startswith("-")][: len(ctx.command_path.split()) - 1]
    shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for option in (w.split("=")[0] for w in argv if w.startswith("--")):
        assert option in shown.output, f"{option} is not in `fedneuro {' '.join(path)} --help`"
    params = ctx.params

    def here(value: str) -> Path:
        return cwd / value  # an absolute value stays as it is
    if "kit_dir" in params:
        kit = load_kit(here(params["kit_dir"]))
        assert kit.role == ("site" if path == ["site", "start"] else "coordinator"), f"{params['kit_dir']}: a {kit.role} kit"
    if path == ["site", "start"]:
        site = load_site_config(here(params["config"]))
        assert site.name == kit.site, f"config names {site.name}, kit is {kit.site}"
        assert site.bids_root.is_dir() and site.state_dir.parent.is_dir()
        assert site.signing_key is not None and site.signing_key.is_file()
    if path == ["server", "start"]:
        assert here(params["state"]).parent.is_dir()
    if "study_path" in params:
        load_study(here(params["study_path"]))
    for site_option in params.get("site", []) or []:
        assert re.fullmatch(r"[\w.-]+=\S+", site_option), site_option


def _container_paths_ok(argv: list[str], service_mounts: list[dict[str, Any]], where: str) -> None:
    parse_cli(argv)
    for token in argv:
        if token.startswith("/"):
            assert mount_for(token, service_mounts) is not None, f"{where}: {token} is in no mount"


@dataclass
class Containers:
    """`docker run --name` containers a guide started, for its later `docker exec` lines."""

    mounts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def check_docker(argv: list[str], cwd: Path, containers: Containers) -> None:
    compose = load_compose()
    services = compose["services"]
    if argv[1] == "build":
        options = dict(zip(argv[2:-1:2], argv[3:-1:2], strict=True))
        dockerfile = REPO / options["-f"]
        role = dockerfile.name.removesuffix(".Dockerfile")
        assert dockerfile.is_file() and argv[-1] == ".", "build from the repository root with -f deploy/ROLE.Dockerfile"
        assert options["-t"] == f"fedneuro-{role}:{VERSION}", f"tag {options['-t']}: use the package version {VERSION}"
        return
    if argv[1] == "compose":
        assert argv[2] == "-f" and (REPO / argv[3]).resolve() == DEPLOY / "compose.yaml", argv
        sub, rest = argv[4], argv[5:]
        assert sub in {"build", "up", "logs", "exec", "cp", "run", "down", "ps"}, sub
        if sub == "up":
            assert set(rest) <= {"-d"}, rest
        elif sub == "logs":
            assert all(r in services for r in rest), rest
        elif sub == "exec":
            rest = [r for r in rest if r != "-T"]
            service, inner = rest[0], rest[1:]
            assert service in services, service
            _container_paths_ok(inner, mounts(services[service]), f"compose exec {service}")
        elif sub == "cp":
            for part in rest:
                if ":" in part:
                    service, _, path = part.partition(":")
                    assert service in services and mount_for(path, mounts(services[service])) is not None, part
                else:
                    assert (REPO / part).parent.is_dir(), part
        return
    if argv[1] == "run":
        words = argv[2:]
        run_mounts: list[dict[str, Any]] = []
        name = None
        while words[0].startswith("-"):
            option = words.pop(0)
            if option in {"-d", "--rm"}:
                continue
            value = words.pop(0)
            if option == "--name":
                name = value
            elif option == "-v":
                parts = value.split(":")
                run_mounts.append({"type": "bind" if parts[0].startswith("/") else "volume", "source": parts[0],
                                   "target": parts[1], "read_only": parts[2:] == ["ro"], "subpath": None})
        image, command = words[0], words[1:]
        role = image.split(":")[0].removeprefix("fedneuro-")
        assert image == f"fedneuro-{role}:{VERSION}", image
        entrypoint = Dockerfile(DEPLOY / f"{role}.Dockerfile").exec_form("ENTRYPOINT")
        _container_paths_ok([*entrypoint, *command], run_mounts, f"docker run {image}")
        by_target = {m["target"]: m for m in run_mounts}
        for mount in run_mounts:
            if mount["type"] == "bind":
                assert Path(mount["source"]).exists(), f"bind source {mount['source']} does not exist at this point"
        assert by_target["/data"]["read_only"] and by_target["/kit"]["read_only"], "data and kit read-only"
        if "/config/site.toml" in by_target:
            from fedneuro.federation.launch import load_site_config

            source = Path(by_target["/config/site.toml"]["source"])
            replacements = {m["target"]: Path(m["source"]) if m["type"] == "bind" else cwd / m["source"] for m in run_mounts}
            site = load_site_config(container_config(source, replacements, cwd / ".container-site.toml"))
            raw = source.read_text(encoding="utf-8")
            for value in re.findall(r'"(/[^"]+)"', raw):
                assert mount_for(value, run_mounts) is not None, f"{source.name}: {value} is in no mount"
            assert site.signing_key is not None and site.signing_key.is_file()
        if name:
            containers.mounts[name] = run_mounts
        return
    if argv[1] == "exec":
        name, inner = argv[2], argv[3:]
        assert name in containers.mounts, f"docker exec {name}: no `docker run --name {name}` before it"
        _container_paths_ok(inner, containers.mounts[name], f"docker exec {name}")
        return
    raise AssertionError(f"unexpected docker command {argv}")


# --------------------------------------------------------------------------- running a guide
@dataclass
class Result:
    step: Step
    mode: str
    output: str = ""
    seconds: float = 0.0


class Shell:
    """One bash session per guide, as a reader's terminal: variables and the folder carry over."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.run("set -o pipefail", timeout_s=30)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def run(self, command: str, *, timeout_s: float) -> tuple[int, str]:
        assert self.proc.stdin is not None
        marker = f"__guide_step_done_{uuid.uuid4().hex}__"
        self.proc.stdin.write(f"{{\n{command}\n}} < /dev/null 2>&1\necho \"{marker} $?\"\n")
        self.proc.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"`{command}` did not finish within {timeout_s:.0f} s:\n{''.join(output)[-3000:]}") from None
            if marker in line:  # the command's last line may lack its newline
                before, _, status = line.partition(marker)
                return int(status.split()[0]), "".join([*output, before])
            output.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _expected_shown(step: Step, output: str) -> None:
    lines = [line.strip() for line in output.splitlines()]
    for expected in step.expected:
        pattern = ".*".join(re.escape(part) for part in expected.split("..."))
        assert any(re.fullmatch(pattern, line) or re.search(pattern, line) for line in lines), \
            f"{step.where()}: the guide shows {expected!r} after `{step.text}`, but it printed:\n{output}"


def run_guide(name: str, cwd: Path, *, mapping: dict[str, Path] | None = None,
              rewrite: dict[str, str] | None = None) -> list[Result]:
    mapping = mapping or {}
    containers = Containers()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200",
           "NO_COLOR": "1", "PYTHONWARNINGS": "ignore"}
    results = []

    def mapped(text: str) -> str:
        for example, here in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(example, here.as_posix())
        return text

    shell = Shell(cwd, env)
    try:
        for step in read_guide(name):
            results.append(_run_step(step, cwd, shell, containers, mapped, rewrite or {}))
    finally:
        shell.close()
    print(f"\n{name}: {sum(r.mode == 'executed' for r in results)} executed, "
          f"{sum(r.mode == 'validated' for r in results)} validated, {sum(r.mode == 'written' for r in results)} files")
    for r in results:
        first = r.step.text.splitlines()[0] if r.step.kind == "command" else r.step.path
        print(f"  {r.mode:9} {r.seconds:5.1f} s  {r.step.where():28} {first}")
    return results


def _run_step(step: Step, cwd: Path, shell: Shell, containers: Containers, mapped: Any,
              rewrite: dict[str, str]) -> Result:
    started = time.monotonic()
    if step.kind == "file":
        target = cwd / mapped(step.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(mapped(step.text), encoding="utf-8")
        return Result(step, "written")
    mode = mode_of(step.text)
    command = mapped(step.text)
    for pattern, replacement in rewrite.items():
        command = re.sub(pattern, replacement, command)
    if mode == "validated":
        argv = shlex.split(command)
        try:
            if argv[0] == "docker":
                check_docker(argv, cwd, containers)
            elif argv[0] == "make":
                done = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True,
                                      timeout=60, check=False)
                assert done.returncode == 0, done.stderr
            else:
                check_fedneuro(argv, cwd)
        except Exception as error:
            raise AssertionError(f"{step.where()}: `{step.text}` is not valid: {error}") from error
        return Result(step, mode, seconds=time.monotonic() - started)
    returncode, output = shell.run(command, timeout_s=300)
    assert returncode == 0, f"{step.where()}: `{step.text}` exited {returncode}:\n{output[-4000:]}"
    _expected_shown(step, output)
    return Result(step, mode, output, time.monotonic() - started)


# --------------------------------------------------------------------------- what each reader has received
def _fedneuro(*args: str, cwd: Path) -> str:
    done = subprocess.run([str(BIN / "fedneuro"), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A provisioned consortium, one synthetic site of 40 participants, the template study signed."""
    from fedneuro.deploy.consortium import parse_consortium
    from fedneuro.deploy.provision import provision
    from fedneuro.governance.keys import load_signing_key
    from fedneuro.governance.study_signature import sign_study, write_study_signature
    from fedneuro.study import load_study

    root = tmp_path_factory.mktemp("received")
    spec = parse_consortium('[consortium]\nname = "eeg-consortium"\n[coordinator]\nhost = "coord.example.org"\n'
                            '[[sites]]\nname = "hospital-a"\n[[sites]]\nname = "hospital-b"\n')
    provision(spec, root / "kits")
    _fedneuro("synth", "eeg", "--sites", "1", "--participants", "40", "--duration", "10", "--out", "data", cwd=root)
    study = root / f"{STUDY_ID}.toml"
    study.write_text(_fedneuro("study", "template", cwd=root), encoding="utf-8")
    write_study_signature(study.with_name(study.name + ".sig"),
                          sign_study(load_study(study), load_signing_key(root / "kits/coordinator/signing.key"),
                                     datetime.now(timezone.utc)))
    return {"root": root, "kits": root / "kits", "site_kit": root / "kits/sites/hospital-a",
            "data": root / "data/hospital-a", "study": study}


def seed_site_records(state_dir: Path, site_key: Path, audit_log: Path) -> None:
    """What a site's state holds after a round: its ledger and an audit log (fedneuro's writers)."""
    from fedneuro.governance.audit import AuditLog
    from fedneuro.governance.keys import load_signing_key
    from fedneuro.privacy.ledger import LedgerEntry, PrivacyLedger

    now = datetime.now(timezone.utc)
    PrivacyLedger(state_dir / "privacy-ledger.jsonl").append([
        LedgerEntry(study_id=STUDY_ID, round=r, noise_multiplier=1.5, sample_rate=0.667, steps=4, max_grad_norm=0.5,
                    unit="participant", max_windows_per_unit=4, delta=1e-5, recorded_at=now.isoformat())
        for r in (1, 2)])
    log = AuditLog(audit_log, load_signing_key(site_key), actor="hospital-a")
    log.append("consent-import", {"added": 38, "source": "participants.tsv"}, now=now)
    log.append("plan-approved", {"study_id": STUDY_ID, "max_epsilon": 8.0, "rounds": 5}, now=now)
    for r in (1, 2):
        log.append("round-trained", {"round": r, "epsilon": 1.0 * r, "delta": 1e-05, "dp_steps": 4}, now=now)


# --------------------------------------------------------------------------- the guides
def test_guides_use_only_tested_blocks() -> None:
    for name in GUIDES:
        read_guide(name)  # asserts on every block's language
    assert any(s.kind == "command" for name in GUIDES for s in read_guide(name))


def test_site_operator_guide(received: dict[str, Path], tmp_path: Path) -> None:
    from fedneuro.deploy.provision import load_kit

    world = tmp_path / "work"
    world.mkdir()
    mapping = {"/etc/fedneuro": tmp_path / "etc", "/archive/eeg-bids": tmp_path / "archive/eeg-bids",
               "/var/lib/fedneuro": tmp_path / "var-lib"}
    shutil.copytree(received["data"], mapping["/archive/eeg-bids"])
    with tarfile.open(world / "hospital-a-kit.tar.gz", "w:gz") as tar:
        tar.add(received["site_kit"], arcname="hospital-a")
    for suffix in ("", ".sig"):
        shutil.copy(received["study"].with_name(received["study"].name + suffix), world / f"{STUDY_ID}.toml{suffix}")
    state = mapping["/var/lib/fedneuro"] / "hospital-a"
    seed_site_records(state, received["site_kit"] / "signing.key", state / "hospital-a.audit.jsonl")

    results = run_guide("site-operator.md", world, mapping=mapping)

    # The fingerprints the guide computes with openssl/ssh-keygen are the kit's.
    kit = load_kit(mapping["/etc/fedneuro"] / "kit")
    assert kit.node is not None and kit.coordinator_signing is not None
    expected = {kit.ca.fingerprint, kit.coordinator_signing.fingerprint, kit.signing.fingerprint, kit.node.fingerprint}
    computed = {"sha256:" + r.output.split()[0] for r in results if "sha256sum" in r.step.text}
    assert computed == expected
    approvals = list((state / "approvals").glob("*.json"))
    assert len(approvals) == 1 and '"decision": "approve"' in approvals[0].read_text(encoding="utf-8")
    assert {r.mode for r in results} == {"executed", "validated", "written"}


def test_coordinator_guide(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("data", "results", "*.sig", "demo.toml"))
    results = run_guide("coordinator.md", tmp_path,
                        rewrite={r"(fedneuro synth eeg .*)--participants \d+": r"\1--participants 6 --duration 10"})
    from fedneuro.deploy.provision import load_kit
    from fedneuro.study import load_study

    assert load_kit(tmp_path / "kits/coordinator").role == "coordinator"
    assert (tmp_path / "hospital-a-kit.tar.gz").is_file() and (tmp_path / "study.toml.sig").is_file()
    # What the guide makes for the one-host consortium is what compose.yaml mounts.
    compose = load_compose()
    for name, service in compose["services"].items():
        for mount in mounts(service):
            if mount["type"] == "bind":
                assert (tmp_path / "deploy" / mount["source"]).exists(), f"{name}: {mount['source']} after the guide"
    assert load_study(tmp_path / "deploy/studies/demo.toml").study.id == STUDY_ID
    validated = {r.step.text.split()[1] for r in results if r.mode == "validated" and r.step.text.startswith("fedneuro")}
    assert validated == {"server", "run", "evaluate"}


def test_ethics_board_guide(received: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    site_state = run / "sites/hospital-a"
    audit = run / "audit"
    audit.mkdir(parents=True)
    shutil.copy(received["study"], run / "study.toml")
    shutil.copy(received["study"].with_name(received["study"].name + ".sig"), run / "study.toml.sig")
    shutil.copy(received["kits"] / "coordinator/signing.pub", tmp_path / "coordinator.signing.pub")
    shutil.copy(received["site_kit"] / "signing.pub", audit / "hospital-a.pub")
    seed_site_records(site_state, received["site_kit"] / "signing.key", audit / "hospital-a.audit.jsonl")
    config = tmp_path / "site.toml"
    config.write_text(f'name = "hospital-a"\nbids_root = "{received["data"]}"\nstate_dir = "{site_state}"\n'
                      f'signing_key = "{received["site_kit"] / "signing.key"}"\n[policy]\naccepted_purposes = ["HMB"]\n'
                      f'trusted_coordinator_keys = ["{received["site_kit"] / "coordinator.signing.pub"}"]\n', encoding="utf-8")
    _fedneuro("consent", "import", str(received["data"] / "participants.tsv"), "--state-dir", str(site_state), cwd=tmp_path)
    _fedneuro("site", "approve", str(run / "study.toml"), "--config", str(config), "--participants", "34", cwd=tmp_path)

    results = run_guide("ethics-board.md", tmp_path)

    # The openssl checks the guide shows really check: the same commands fail on altered input.
    verifications = [r for r in results if r.step.text.startswith("openssl pkeyutl -verify")]
    assert len(verifications) >= 4
    for r in verifications:
        message = tmp_path / re.search(r"-in (\S+)", r.step.text).group(1)  # type: ignore[union-attr]
        original = message.read_bytes()
        message.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        done = subprocess.run(["bash", "-c", r.step.text], cwd=tmp_path, capture_output=True, text=True, check=False)
        message.write_bytes(original)
        assert done.returncode != 0 and "Verification Failure" in done.stdout + done.stderr, r.step.where()
    assert (tmp_path / "report/report.json").is_file() and (tmp_path / "report/report.html").is_file()
    chain = next(r for r in results if r.step.text.startswith("python3 -"))
    assert chain.output.count("hash ok chain ok") == 4 and "EDITED" not in chain.output


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_guide_links_resolve() -> None:
    pages = [DOCS / name for name in GUIDES] + [DEPLOY / "studies/README.md"]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            assert linked.exists(), f"{page.name}: link to {target}: no such file"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), flags=re.MULTILINE)
                assert anchor in {_slug(h) for h in headings}, f"{page.name}: link to {target}: no such heading"


def test_threat_model_commands(tmp_path: Path) -> None:
    results = run_guide("threat-model.md", tmp_path)
    assert all(r.mode != "validated" or r.step.text.startswith(("docker", "make", "fedneuro")) for r in results)


# --------------------------------------------------------------------------- the checks can fail
def test_validation_rejects_a_wrong_command(received: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(Exception, match="No such option"):
        check_fedneuro(["fedneuro", "site", "start", "--kit", "kit", "--conf", "site.toml"], tmp_path)
    with pytest.raises(Exception, match="coordinator"):
        check_fedneuro(["fedneuro", "run", str(received["study"]), "--kit", str(received["site_kit"])], tmp_path)
    with pytest.raises(AssertionError, match="package version"):
        check_docker(["docker", "build", "-f", "deploy/site.Dockerfile", "-t", "fedneuro-site:latest", "."],
                     tmp_path, Containers())
    with pytest.raises(AssertionError, match="no mount"):
        check_docker(["docker", "compose", "-f", "deploy/compose.yaml", "exec", "hospital-a", "fedneuro", "privacy",
                      "status", "--site-dir", "/var/lib/elsewhere"], tmp_path, Containers())
