"""`fedneuro benchmark`: the scripts run as subprocesses, their JSON lands in benchmarks.json and
benchmarks.md with goals and the machine; a failing script is recorded, the others still run.
No timing assertions: the machine is shared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedneuro import benchmarking
from fedneuro.benchmarking import BenchmarkSetupError, BenchmarkSpec, Metric, parse_json_output, run_suite
from fedneuro.cli.main import app

# The two fastest benchmarks (each well under a minute with --quick).
FAST = ("data_cache", "models")
MACHINE_KEYS = {"cpu_count", "cpu_usable", "cpu_model", "memory_gib", "platform", "python", "torch", "gpu"}
ENTRY_KEYS = {"script", "what", "args", "status", "returncode", "wall_time_s", "passed", "ratios", "goals",
              "metrics", "result", "error", "stderr_tail"}


def test_quick_run_of_the_two_fastest_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["benchmark", "--quick", "--only", ",".join(FAST), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((out / "benchmarks.json").read_text())
    assert {"schema_version", "fedneuro_version", "created", "quick", "wall_time_s", "machine", "benchmarks",
            "summary"} <= set(report)
    assert report["quick"] is True
    assert MACHINE_KEYS <= set(report["machine"]) and report["machine"]["cpu_count"] >= 1
    assert list(report["benchmarks"]) == list(FAST)  # suite order, only those asked for
    for name, entry in report["benchmarks"].items():
        assert set(entry) == ENTRY_KEYS, name
        assert entry["status"] == "ok" and entry["returncode"] == 0 and entry["error"] is None, entry["stderr_tail"]
        assert entry["script"] == f"benchmarks/{name}.py" and "--json" not in entry["args"]
        assert entry["ratios"] and all(isinstance(v, float) for v in entry["ratios"].values())
        assert entry["goals"], name  # both carry goals in quick mode
        for goal in entry["goals"]:
            assert goal["op"] in {"<=", ">="} and isinstance(goal["threshold"], float)
            assert isinstance(goal["passed"], bool) and goal["key"] in entry["ratios"]
        assert entry["passed"] == all(g["passed"] for g in entry["goals"])
    assert report["benchmarks"]["data_cache"]["result"]["cache_mb"] > 0
    assert all(key.endswith("-base") for key in
               (g["key"].split(".", 1)[1] for g in report["benchmarks"]["models"]["goals"]))
    summary = report["summary"]
    assert summary["benchmarks"] == summary["ok"] == 2 and summary["failed"] == []
    assert summary["goals"] == sum(len(e["goals"]) for e in report["benchmarks"].values())
    markdown = (out / "benchmarks.md").read_text()
    assert "| benchmark | what | value | goal | result |" in markdown
    assert all(f"| {name} |" in markdown for name in FAST) and "cores" in markdown
    assert (out / "logs" / "data_cache.stderr.txt").is_file()


def _fake_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "checkout" / "benchmarks"
    folder.mkdir(parents=True)
    (folder / "boom.py").write_text("import sys\nprint('half a result')\nsys.stderr.write('x' * 9000 + 'BOOM: it broke')\n"
                                    "sys.exit(3)\n")
    (folder / "chatty.py").write_text("print('a library said hello')\nprint('{\\n  \"ratio\": 1.5\\n}')\n")
    (folder / "notjson.py").write_text("print('no json here')\n")
    return folder


def _spec(name: str, script: str, threshold: float = 2.0) -> BenchmarkSpec:
    return BenchmarkSpec(name, script, f"fake {name}", (), ("--quick",),
                         lambda r: [Metric("ratio", "a ratio", r.get("ratio"), "x", "<=", threshold)])


def test_a_failing_script_is_recorded_and_the_others_still_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_folder(tmp_path)
    monkeypatch.setattr(benchmarking, "repository_root", lambda: folder.parent)
    specs = [_spec("boom", "boom.py"), _spec("notjson", "notjson.py"), _spec("chatty", "chatty.py"),
             _spec("missed", "chatty.py", threshold=1.0)]
    report = run_suite(specs, quick=True, out=tmp_path / "out")
    boom, notjson, chatty, missed = (report["benchmarks"][s.name] for s in specs)
    assert boom["status"] == "failed" and boom["returncode"] == 3 and boom["passed"] is False
    assert boom["error"] == "exited with code 3" and boom["stderr_tail"].endswith("BOOM: it broke")
    assert len(boom["stderr_tail"]) == benchmarking.STDERR_TAIL_CHARS and boom["ratios"] == {}
    assert notjson["status"] == "failed" and "no JSON object" in notjson["error"]
    assert chatty["status"] == "ok" and chatty["ratios"] == {"ratio": 1.5} and chatty["passed"] is True
    assert chatty["args"] == ["--quick"]
    assert missed["status"] == "ok" and missed["passed"] is False and missed["goals"][0]["goal"] == "≤ 1.00×"
    assert report["summary"]["failed"] == ["boom", "notjson"] and report["summary"]["goals_missed"] == ["missed:ratio"]
    markdown = (tmp_path / "out" / "benchmarks.md").read_text()
    assert "## boom failed: exited with code 3" in markdown and "BOOM: it broke" in markdown
    assert json.loads((tmp_path / "out" / "benchmarks.json").read_text())["summary"] == report["summary"]


def test_cli_exits_non_zero_when_a_benchmark_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_folder(tmp_path)
    monkeypatch.setattr(benchmarking, "repository_root", lambda: folder.parent)
    monkeypatch.setattr(benchmarking, "SUITE", (_spec("boom", "boom.py"), _spec("chatty", "chatty.py")))
    monkeypatch.setattr(benchmarking, "SUITE_NAMES", ("boom", "chatty"))
    result = CliRunner().invoke(app, ["benchmark", "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["benchmarks"]["boom"]["status"] == "failed" and report["benchmarks"]["chatty"]["status"] == "ok"


def test_without_a_checkout_the_command_says_where_the_scripts_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(benchmarking, "repository_root", lambda: tmp_path)
    with pytest.raises(BenchmarkSetupError, match=r"ship with the repository.*pip install -e \."):
        benchmarking.benchmarks_dir()
    result = CliRunner().invoke(app, ["benchmark", "--out", str(tmp_path / "out")])
    said = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2 and "lacks dp_step.py" in said and "pip install -e ." in said
    assert not (tmp_path / "out").exists()


def test_only_names_unknown_benchmarks_and_the_allowed_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["benchmark", "--only", "dp_step,nope", "--out", str(tmp_path)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "unknown benchmark(s) ['nope']" in said and "sites_scaling" in said
    assert [s.name for s in benchmarking.select("utility, dp-step")] == ["dp_step", "utility"]
    assert [s.name for s in benchmarking.select(None)] == list(benchmarking.SUITE_NAMES)


def test_the_suite_is_every_script_in_the_checkout() -> None:
    folder = benchmarking.benchmarks_dir()
    assert sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_")) == sorted(benchmarking.SUITE_NAMES)


def test_json_output_survives_stray_lines_and_goals_read_both_ways() -> None:
    assert parse_json_output('warning: x\n{\n  "a": {"b": 1}\n}\n') == {"a": {"b": 1}}
    with pytest.raises(ValueError, match="not an object"):
        parse_json_output("[1, 2]")
    assert Metric("m", "m", 1.1, "x", "<=", 1.15).passed is True
    assert Metric("m", "m", 19.0, "x", ">=", 20.0).passed is False
    assert Metric("m", "m", None, "x", ">=", 20.0).passed is False
    assert Metric("m", "m", float("nan"), "x", "<=", 2.0).passed is False
    assert Metric("m", "m", 3.0).passed is None and Metric("m", "m", 3.0).goal_text() is None
    assert Metric("m", "m", 0.02, "%", "<=", 0.05).goal_text() == "≤ 5.0 %"


def test_scripts_metrics_read_their_json() -> None:
    """Each script's JSON shape (as its --json prints it) maps to the metrics and goals."""
    by_name = {spec.name: spec for spec in benchmarking.SUITE}
    dp = by_name["dp_step"].metrics({"preset": "labram-base", "ratio_dp_participant_over_non_private": 1.03,
                                     "ratio_dp_window_over_non_private": 1.04})
    assert [(m.key, m.passed) for m in dp] == [("dp_participant_over_non_private", True), ("dp_window_over_non_private", None)]
    fed = by_name["federation"].metrics({"round_over_slowest_training": {"plain": {"ratio": 1.1}, "secure": {"ratio": 1.4}},
                                         "aggregation_100x1e6": {"ratio": 0.7}, "bytes_per_site_per_round": {"expansion": 1.9}})
    assert {m.key: m.passed for m in fed} == {"round_over_slowest_training.secure": False,
                                             "round_over_slowest_training.plain": None,
                                             "aggregation_flower_over_numpy": True, "bytes_secure_over_plain": None}
    scaling = by_name["sites_scaling"].metrics({"runs": [{"sites": 5, "ok": True, "seconds_per_site_round": 2.0},
                                                         {"sites": 50, "ok": False}],
                                                "ratio_per_site_round_largest_over_smallest": None})
    assert [m.key for m in scaling] == ["seconds_per_site_round.5", "per_site_round_largest_over_smallest"]
    utility = by_name["utility"].metrics({"points": [
        {"epsilon_label": "8", "target_epsilon": 8.0, "ratio": 0.93, "goal": {"op": ">=", "threshold": 0.9},
         "federated": {"epsilon_achieved": 7.1}},
        {"epsilon_label": "1", "target_epsilon": 1.0, "ratio": 0.7, "goal": None, "federated": {"epsilon_achieved": 0.9}},
        {"epsilon_label": "inf", "target_epsilon": None, "ratio": 0.95, "goal": {"op": ">=", "threshold": 0.97},
         "federated": {"epsilon_achieved": 4e6}}]})
    assert [(m.key, m.passed) for m in utility] == [("federated_over_centralised.eps_8", True),
                                                    ("federated_over_centralised.eps_1", None),
                                                    ("federated_over_centralised.eps_inf", False)]
    assert "achieved ε ≤ 7.10" in utility[0].label and "achieved" not in utility[2].label


def test_machine_info_names_cores_memory_cpu_torch_and_gpu() -> None:
    info = benchmarking.machine_info()
    assert MACHINE_KEYS <= set(info) and info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["gpu"] is None or all(isinstance(name, str) for name in info["gpu"])
    assert "cores" in benchmarking.describe_machine(info)
