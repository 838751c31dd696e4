"""The benchmark suite behind ``fedneuro benchmark``.

Each benchmark is a script in the repository checkout's ``benchmarks/`` folder that measures
its ratios side by side in one run and prints one JSON object with ``--json``. This module
knows the scripts (their full and ``--quick`` settings and the goals of their ratios), runs
them as subprocesses one after another — never at the same time: each measures wall times,
and two at once would share the cores and distort both — reads their JSON, checks the goals
and writes ``benchmarks.json`` and ``benchmarks.md``. A script that fails is recorded as
failed with the tail of its stderr; the others still run.

It also holds the small helpers the workload scripts share (study variants of the demo study,
site profiles for many sites, running ``fedneuro simulate`` as a subprocess), so that they
build their studies the same way. No torch import here: the CLI stays light.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedneuro import __version__

SCHEMA_VERSION = 1
STDERR_TAIL_CHARS = 4000


class BenchmarkSetupError(RuntimeError):
    """The suite cannot run as asked (no checkout, unknown name); the message says what to do."""


# --------------------------------------------------------------------------- metrics and goals
@dataclass(frozen=True)
class Metric:
    """One number a benchmark reports; ``op``/``threshold`` make it a goal."""

    key: str
    label: str
    value: float | None
    unit: str = "x"  # "x" ratio, "%" fraction shown as a percentage, "s" seconds, "" plain
    op: str | None = None  # "<=" or ">="
    threshold: float | None = None

    @property
    def has_goal(self) -> bool:
        return self.op is not None and self.threshold is not None

    @property
    def passed(self) -> bool | None:
        if not self.has_goal:
            return None
        if self.value is None or not math.isfinite(self.value):
            return False
        return self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold  # type: ignore[operator]

    def goal_text(self) -> str | None:
        if not self.has_goal:
            return None
        return f"{'≤' if self.op == '<=' else '≥'} {format_value(self.threshold, self.unit)}"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "value": self.value, "unit": self.unit,
                "goal": self.goal_text(), "op": self.op, "threshold": self.threshold, "passed": self.passed}


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "%":
        return f"{100 * value:.1f} %"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "s":
        return f"{value:.1f} s" if value >= 1 else f"{value:.3f} s"
    return f"{value:.3g}"


def _get(result: Mapping[str, Any], *path: str | int) -> float | None:
    node: Any = result
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _dp_step_metrics(r: Mapping[str, Any]) -> list[Metric]:
    preset = r.get("preset", "?")
    return [
        Metric("dp_participant_over_non_private", f"participant-level DP step / non-private step ({preset})",
               _get(r, "ratio_dp_participant_over_non_private"), "x", "<=", 1.15),
        Metric("dp_window_over_non_private", f"window-level DP step / non-private step ({preset})",
               _get(r, "ratio_dp_window_over_non_private"), "x"),
    ]


def _data_cache_metrics(r: Mapping[str, Any]) -> list[Metric]:
    return [Metric("first_over_cached", f"first decode + preprocess / cached reload ({r.get('windows', '?')} windows)",
                   _get(r, "ratio_first_over_cached"), "x", ">=", 20.0)]


def _models_metrics(r: Mapping[str, Any]) -> list[Metric]:
    out = []
    for row in r.get("presets", []):
        name = str(row.get("preset"))
        published = name.endswith("-base")  # the goal is for published-size presets
        out.append(Metric(f"adapter_over_backbone.{name}", f"adapter bytes / fp32 backbone bytes, {name}",
                          _get(row, "adapter_backbone_ratio"), "%", "<=" if published else None,
                          0.05 if published else None))
    return out


def _federation_metrics(r: Mapping[str, Any]) -> list[Metric]:
    return [
        Metric("round_over_slowest_training.secure", "round / slowest site's training, SecAgg+",
               _get(r, "round_over_slowest_training", "secure", "ratio"), "x", "<=", 1.3),
        Metric("round_over_slowest_training.plain", "round / slowest site's training, plain",
               _get(r, "round_over_slowest_training", "plain", "ratio"), "x"),
        Metric("aggregation_flower_over_numpy", "aggregation: Flower FedAvg / in-place numpy",
               _get(r, "aggregation_100x1e6", "ratio"), "x", "<=", 2.0),
        Metric("bytes_secure_over_plain", "bytes uploaded per site-round, SecAgg+ / plain",
               _get(r, "bytes_per_site_per_round", "expansion"), "x"),
    ]


def _sites_scaling_metrics(r: Mapping[str, Any]) -> list[Metric]:
    out = [Metric(f"seconds_per_site_round.{row.get('sites')}", f"{row.get('sites')} sites: seconds per site-round",
                  _get(row, "seconds_per_site_round"), "s") for row in r.get("runs", []) if row.get("ok")]
    out.append(Metric("per_site_round_largest_over_smallest",
                      "seconds per site-round, most sites / fewest sites", _get(r, "ratio_per_site_round_largest_over_smallest"), "x"))
    return out


def _load_metrics(r: Mapping[str, Any]) -> list[Metric]:
    lost = sum(len(v) for v in (r.get("sites_without_update_per_round") or {}).values())
    return [Metric("lost_updates", "site updates missing from the rounds", float(lost), ""),
            Metric("coordinator_rss_mb_max", "coordinator process tree, max RSS", _get(r, "coordinator_rss_mb_max"), "")]


def _utility_metrics(r: Mapping[str, Any]) -> list[Metric]:
    out = []
    for point in r.get("points", []):
        label = point.get("epsilon_label", "?")
        goal = point.get("goal") or {}
        out.append(Metric(f"federated_over_centralised.eps_{label}",
                          f"balanced accuracy federated / centralised, ε = {label}"
                          + (f" (achieved ε ≤ {point['federated']['epsilon_achieved']:.2f})"
                             if (point.get("federated") or {}).get("epsilon_achieved") is not None
                             and point.get("target_epsilon") is not None else ""),
                          _get(point, "ratio"), "x", goal.get("op"), goal.get("threshold")))
    return out


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    script: str
    what: str
    full_args: tuple[str, ...]
    quick_args: tuple[str, ...]
    metrics: Callable[[Mapping[str, Any]], list[Metric]]
    timeout_s: float = 3600.0


SUITE: tuple[BenchmarkSpec, ...] = (
    BenchmarkSpec("dp_step", "dp_step.py", "participant-level DP-SGD step vs non-private step, LaBraM-base LoRA",
                  ("--repeats", "7"), ("--repeats", "3"), _dp_step_metrics),
    BenchmarkSpec("data_cache", "data_cache.py", "cached reload vs first decode + preprocess of EEG windows",
                  (), ("--participants", "4", "--duration", "60", "--repeats", "2"), _data_cache_metrics),
    BenchmarkSpec("models", "models.py", "adapter vs backbone bytes and forward throughput per preset",
                  (), ("--presets", "biot-base,labram-base,cbramod-base", "--repeats", "1", "--batch", "4"), _models_metrics),
    BenchmarkSpec("federation", "federation.py", "round overhead (plain, SecAgg+), aggregation, bytes",
                  (), ("--participants", "12", "--rounds", "2", "--repeats", "2"), _federation_metrics),
    BenchmarkSpec("sites_scaling", "sites_scaling.py", "simulated study wall time vs number of sites",
                  (), ("--quick",), _sites_scaling_metrics),
    BenchmarkSpec("utility", "utility.py", "federated vs centralised balanced accuracy over ε",
                  (), ("--quick",), _utility_metrics),
    BenchmarkSpec("load", "load.py", "SuperNodes on loopback: lost updates, coordinator memory",
                  (), ("--sites", "3", "--rounds", "1"), _load_metrics),
)
SUITE_NAMES: tuple[str, ...] = tuple(spec.name for spec in SUITE)


def select(only: str | None) -> list[BenchmarkSpec]:
    """The benchmarks named in ``only`` (comma-separated), in suite order; all when empty."""
    if not only or not only.strip():
        return list(SUITE)
    names = [n.strip().replace("-", "_") for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITE_NAMES]
    if unknown:
        raise BenchmarkSetupError(f"Invalid value for '--only': unknown benchmark(s) {unknown}. "
                                  f"Allowed: {', '.join(SUITE_NAMES)}")
    return [spec for spec in SUITE if spec.name in names]


# --------------------------------------------------------------------------- where the scripts are
def repository_root() -> Path:
    return Path(__file__).resolve().parent.parent


def benchmarks_dir(specs: Sequence[BenchmarkSpec] = SUITE) -> Path:
    """The checkout's ``benchmarks/`` folder beside the package, with every script asked for."""
    folder = repository_root() / "benchmarks"
    missing = [spec.script for spec in specs if not (folder / spec.script).is_file()]
    if missing:
        raise BenchmarkSetupError(
            f"the benchmark scripts are not beside this fedneuro ({Path(__file__).resolve().parent}): "
            f"{folder} lacks {', '.join(missing)}. They ship with the repository, not with the installed "
            "package: run `fedneuro benchmark` from a checkout installed with `pip install -e .`"
        )
    return folder


# --------------------------------------------------------------------------- the machine
def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model, Python, torch and the GPU (or none) of this machine."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
        else:
            info["gpu"] = None
    except Exception as error:  # noqa: BLE001 - the report says so instead of failing
        info["torch"] = None
        info["gpu"] = None
        info["torch_error"] = str(error)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def describe_machine(m: Mapping[str, Any]) -> str:
    gpu = ", ".join(m["gpu"]) if m.get("gpu") else "no GPU"
    memory = f"{m['memory_gib']:g} GiB" if m.get("memory_gib") else "? GiB"
    return (f"{m.get('cpu_usable')} cores ({m.get('cpu_model')}), {memory}, {gpu}, "
            f"torch {m.get('torch')} ({m.get('torch_threads')} threads), Python {m.get('python')}")


# --------------------------------------------------------------------------- running
@dataclass
class BenchmarkRun:
    spec: BenchmarkSpec
    args: list[str]
    status: str = "pending"  # "ok" or "failed"
    returncode: int | None = None
    wall_time_s: float = 0.0
    result: dict[str, Any] | None = None
    metrics: list[Metric] = field(default_factory=list)
    error: str | None = None
    stderr_tail: str | None = None

    @property
    def passed(self) -> bool | None:
        if self.status != "ok":
            return False
        verdicts = [m.passed for m in self.metrics if m.has_goal]
        return None if not verdicts else all(bool(v) for v in verdicts)

    def to_json(self) -> dict[str, Any]:
        return {
            "script": f"benchmarks/{self.spec.script}",
            "what": self.spec.what,
            "args": self.args,
            "status": self.status,
            "returncode": self.returncode,
            "wall_time_s": round(self.wall_time_s, 2),
            "passed": self.passed,
            "ratios": {m.key: m.value for m in self.metrics},
            "goals": [m.to_json() for m in self.metrics if m.has_goal],
            "metrics": [m.to_json() for m in self.metrics],
            "result": self.result,
            "error": self.error,
            "stderr_tail": self.stderr_tail,
        }


def parse_json_output(stdout: str) -> dict[str, Any]:
    """The script's JSON object; tolerates stray lines a library printed before it."""
    text = stdout.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
        starts = [i for i, line in enumerate(text.splitlines()) if line.startswith("{")]
        lines = text.splitlines()
        for start in starts:
            try:
                value = json.loads("\n".join(lines[start:]))
                break
            except json.JSONDecodeError:
                continue
        if value is None:
            raise ValueError("the script printed no JSON object on stdout") from None
    if not isinstance(value, dict):
        raise ValueError(f"the script printed JSON {type(value).__name__}, not an object")
    return value


def run_benchmark(spec: BenchmarkSpec, *, quick: bool, folder: Path, log_dir: Path | None = None,
                  timeout_s: float | None = None) -> BenchmarkRun:
    """Run one script with ``--json`` (and its quick settings); never raises for the script's failure."""
    args = list(spec.quick_args if quick else spec.full_args)
    run = BenchmarkRun(spec, args)
    command = [sys.executable, str(folder / spec.script), *args, "--json"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=folder.parent, capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=timeout_s or spec.timeout_s)
        stdout, stderr, run.returncode = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = _text(expired.stdout)
        stderr = _text(expired.stderr)
        run.error = f"timed out after {expired.timeout:g} s"
    run.wall_time_s = time.monotonic() - started
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{spec.name}.stdout.txt").write_text(stdout, encoding="utf-8")
        (log_dir / f"{spec.name}.stderr.txt").write_text(stderr, encoding="utf-8")
    if run.error is None and run.returncode != 0:
        run.error = f"exited with code {run.returncode}"
    if run.error is None:
        try:
            run.result = parse_json_output(stdout)
            run.metrics = spec.metrics(run.result)
        except Exception as error:  # noqa: BLE001 - recorded, the suite goes on
            run.error = f"could not read its JSON: {error}"
    run.status = "ok" if run.error is None else "failed"
    if run.status == "failed":
        run.stderr_tail = stderr[-STDERR_TAIL_CHARS:] if stderr else ""
    return run


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def suite_report(runs: Sequence[BenchmarkRun], *, quick: bool, machine: Mapping[str, Any],
                 started: datetime, wall_time_s: float) -> dict[str, Any]:
    goals = [m for run in runs for m in run.metrics if m.has_goal]
    return {
        "schema_version": SCHEMA_VERSION,
        "fedneuro_version": __version__,
        "created": started.isoformat(timespec="seconds"),
        "quick": quick,
        "wall_time_s": round(wall_time_s, 1),
        "machine": dict(machine),
        "benchmarks": {run.spec.name: run.to_json() for run in runs},
        "summary": {
            "benchmarks": len(runs),
            "ok": sum(run.status == "ok" for run in runs),
            "failed": [run.spec.name for run in runs if run.status != "ok"],
            "goals": len(goals),
            "goals_met": sum(bool(m.passed) for m in goals),
            "goals_missed": [f"{run.spec.name}:{m.key}" for run in runs for m in run.metrics
                             if m.has_goal and not m.passed],
        },
    }


def markdown_report(report: Mapping[str, Any]) -> str:
    """benchmarks.md: the machine, then one table row per number, goals beside them."""
    machine = report["machine"]
    lines = [
        "# fedneuro benchmarks" + (" (--quick: smaller settings, a smoke test)" if report["quick"] else ""),
        "",
        f"- machine: {describe_machine(machine)}",
        f"- fedneuro {report['fedneuro_version']}, {report['created']}, {report['wall_time_s']:.0f} s in all",
        "- each script measures its ratio side by side in one run; scripts ran one after another",
        "",
        "| benchmark | what | value | goal | result |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["benchmarks"].items():
        if entry["status"] != "ok":
            lines.append(f"| {name} | {entry['what']} | **failed**: {entry['error']} | | ✗ |")
            continue
        for metric in entry["metrics"]:
            verdict = {True: "✓", False: "✗", None: ""}[metric["passed"]]
            lines.append(f"| {name} | {metric['label']} | {format_value(metric['value'], metric['unit'])} | "
                         f"{metric['goal'] or '—'} | {verdict} |")
    summary = report["summary"]
    lines += ["", f"{summary['ok']} of {summary['benchmarks']} benchmarks ran; "
                  f"{summary['goals_met']} of {summary['goals']} goals met."]
    for name, entry in report["benchmarks"].items():
        if entry["status"] != "ok":
            lines += ["", f"## {name} failed: {entry['error']}", "", "```", (entry["stderr_tail"] or "").rstrip(), "```"]
    for name, entry in report["benchmarks"].items():
        command = " ".join([f"python {entry['script']}", *entry["args"]])
        lines += ["", f"`{name}`: `{command}` ({entry['wall_time_s']:.0f} s)"]
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "benchmarks.json", out / "benchmarks.md"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n",
                         encoding="utf-8")
    md_path.write_text(markdown_report(report), encoding="utf-8")
    return json_path, md_path


def run_suite(specs: Sequence[BenchmarkSpec], *, quick: bool, out: Path,
              on_start: Callable[[BenchmarkSpec, int], None] | None = None,
              on_done: Callable[[BenchmarkRun, int], None] | None = None) -> dict[str, Any]:
    """Run ``specs`` one after another, write DIR/benchmarks.json and .md, return the report."""
    folder = benchmarks_dir(specs)
    started, clock = datetime.now(UTC), time.monotonic()
    machine = machine_info()
    runs = []
    for index, spec in enumerate(specs):
        if on_start:
            on_start(spec, index)
        run = run_benchmark(spec, quick=quick, folder=folder, log_dir=out / "logs")
        runs.append(run)
        if on_done:
            on_done(run, index)
    report = suite_report(runs, quick=quick, machine=machine, started=started, wall_time_s=time.monotonic() - clock)
    write_report(report, out)
    return report


# --------------------------------------------------------------------------- workload helpers
def study_variant(base: Path, updates: Mapping[str, Any]) -> str:
    """The TOML text of ``base`` with ``updates`` merged in (nested tables merge key by key;
    a value of None removes the key)."""
    import tomli_w  # flwr's dependency (pinned with it): writes TOML

    data = tomllib.loads(base.read_text(encoding="utf-8"))

    def merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
        for key, value in new.items():
            if value is None:
                into.pop(key, None)
            elif isinstance(value, Mapping) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = dict(value) if isinstance(value, Mapping) else value

    merge(data, updates)
    return tomli_w.dumps(data)


def site_profiles(n_sites: int) -> list[Any]:
    """``n_sites`` hospital profiles: the synthetic generator's three, then variations of them
    with gain and sensor noise within a realistic range (x0.67..x1.5 gain, up to 2x noise).

    ``synthesize_consortium`` alone compounds gain by 1.25 per lap, so past about 45 sites a
    site's amplitudes exceed the data layer's 500 µV artefact threshold and every window is
    rejected; a scaling benchmark needs sites that can all train.
    """
    from fedneuro.data.synth import DEFAULT_PROFILES

    gains = (1.0, 1.25, 0.8, 1.5, 0.67)
    out = []
    for i in range(n_sites):
        base, lap = DEFAULT_PROFILES[i % len(DEFAULT_PROFILES)], i // len(DEFAULT_PROFILES)
        if lap == 0:
            out.append(base)
            continue
        out.append(dataclasses.replace(
            base, name=f"{base.name}-{lap + 1}", gain=round(base.gain * gains[lap % len(gains)], 4),
            noise_uv=round(base.noise_uv * (1 + 0.1 * (lap % 11)), 4)))
    return out


def run_simulate(study_path: Path, sites: Sequence[tuple[str, Path]], out: Path, *,
                 site_policy: Path | None = None, timeout_s: float = 3600.0) -> tuple[dict[str, Any], float, str]:
    """``fedneuro simulate --json`` as a subprocess: (summary, wall seconds, stderr).

    A subprocess so each run starts its own Ray and imports, as a user's command does.
    Raises RuntimeError with the stderr tail when the run fails.
    """
    command = [sys.executable, "-m", "fedneuro.cli.main", "simulate", "--study", str(study_path),
               "--out", str(out), "--json"]
    for name, root in sites:
        command += ["--site", f"{name}={root}"]
    if site_policy is not None:
        command += ["--site-policy", str(site_policy)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=timeout_s, cwd=repository_root())
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"fedneuro simulate ({len(sites)} sites) exited with code {done.returncode}:\n"
                           f"{done.stderr[-STDERR_TAIL_CHARS:]}")
    return parse_json_output(done.stdout), seconds, done.stderr


def simulation_resources() -> dict[str, Any]:
    """What ``fedneuro.federation.simulation.run_local_simulation`` gives Ray by default: every
    core, one CPU per ClientApp actor (so one actor per core train concurrently; Flower's own
    default of 2 CPUs per actor would give one actor on a 2-core machine), no GPU. Ray sets
    each actor's OMP_NUM_THREADS to its CPUs, so torch trains with one thread per actor."""
    cpus = os.cpu_count() or 1
    return {"ray_num_cpus": cpus, "client_num_cpus": 1, "client_num_gpus": 0.0, "concurrent_actors": cpus}
