"""End to end: the `fedneuro` command runs a whole simulated consortium (Ray + Flower)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedneuro.models.exchange import trainable_state
from fedneuro.privacy.ledger import PrivacyLedger
from fedneuro.study import load_study
from fedneuro.training.site import build_study_model

pytestmark = pytest.mark.slow
FEDNEURO = [sys.executable, "-m", "fedneuro.cli.main"]


def _tiny_study(tmp_path: Path, **federation: object) -> Path:
    text = (Path(__file__).parents[1] / "fedneuro" / "studies" / "demo.toml").read_text()
    text = text.replace('backbone = "biot-small"', 'backbone = "biot-tiny"').replace("rounds = 5", "rounds = 2")
    # Small test sites: the demo's cohort floors (20 / 10) would refuse them.
    text = text.replace("min_cohort = 20", "min_cohort = 3").replace("min_participants_per_metric = 10", "min_participants_per_metric = 2")
    for key, value in federation.items():
        line = re.compile(rf"^{key} = .*$", re.MULTILINE)
        if line.search(text):
            text = line.sub(f"{key} = {value}", text)
        else:
            text = text.replace("[federation]\n", f"[federation]\n{key} = {value}\n")
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(FEDNEURO + args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_simulated_consortium_learns_with_dp(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synth = _run(["synth", "eeg", "--sites", "3", "--out", str(data), "--participants", "24", "--duration", "20", "--seed", "3", "--json"], 300)
    assert synth.returncode == 0, synth.stderr
    sites = json.loads(synth.stdout)["sites"]
    study_path = _tiny_study(tmp_path)
    out = tmp_path / "out"
    args = ["simulate", "--study", str(study_path), "--out", str(out), "--json"]
    for name, root in sites.items():
        args += ["--site", f"{name}={root}"]
    result = _run(args, 600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["final_balanced_accuracy"] > 0.6  # chance is 0.5
    for name in sites:
        site = summary["sites"][name]
        assert site["epsilon"] > 0 and site["delta"] == 1e-5 and site["unit"] == "participant"
        assert site["bytes_uploaded"] == sum(site["bytes_uploaded_per_round"]) > 0
        ledger = PrivacyLedger(out / "sites" / name / "privacy-ledger.jsonl").entries(summary["study_id"])
        assert [e.round for e in ledger] == [1, 2]
    # The global adapter moved away from the common initialisation.
    initial = trainable_state(build_study_model(load_study(study_path)).module)
    final = load_file(summary["global_adapter"])
    assert set(final) == set(initial)
    assert any(not np.allclose(final[k], initial[k]) for k in initial)
    # The run left a checkpoint: running again needs --resume, which finds nothing left to do.
    again = _run(args, 120)
    assert again.returncode == 2 and "pass --resume to continue it" in again.stderr
    resumed = _run([*args, "--resume"], 300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["rounds"] == summary["rounds"]


def test_mri_demo_learns_through_the_same_federation(tmp_path: Path) -> None:
    result = _run(["demo", "--modality", "mri", "--out", str(tmp_path / "demo-mri"), "--json"], 900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["backbone"] == "mri-resnet-tiny"
    assert summary["final_balanced_accuracy"] >= 0.8  # chance is 0.5
    for site in summary["sites"].values():
        assert 0 < site["epsilon"] <= 10 and site["unit"] == "participant"


def test_a_missing_site_ends_with_a_timeout_not_a_hang(tmp_path: Path, data_consortium) -> None:
    study_path = _tiny_study(tmp_path, min_sites=3, connect_timeout_s=3)
    name, root = next(iter(data_consortium.items()))
    result = _run(["simulate", "--study", str(study_path), "--out", str(tmp_path / "out"), "--site", f"{name}={root}"], 300)
    assert result.returncode == 1
    assert "only 1 of 3 sites connected within 3 s" in result.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "failed"


def test_a_site_refuses_a_study_beyond_its_budget_and_does_not_train(tmp_path: Path, data_consortium) -> None:
    # The study may spend up to its max_epsilon (8): a site whose budget is 0.5 refuses to
    # approve the run plan, so nothing is trained (the per-round budget gate is tested in
    # tests/test_client_app.py).
    policy = tmp_path / "policy.toml"
    policy.write_text("max_epsilon_per_study = 0.5\n")
    args = ["simulate", "--study", str(_tiny_study(tmp_path)), "--out", str(tmp_path / "out"), "--site-policy", str(policy)]
    for name, root in data_consortium.items():
        args += ["--site", f"{name}={root}"]
    result = _run(args, 300)
    assert result.returncode == 2
    assert "would not approve study demo-abnormal-eeg" in result.stderr
    assert "max_epsilon_per_study = 0.5" in result.stderr
    for name in data_consortium:  # nothing was trained, so nothing was spent
        assert PrivacyLedger(tmp_path / "out" / "sites" / name / "privacy-ledger.jsonl").entries() == []


def test_cli_rejects_bad_input_with_clear_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nid = "x"\n[privacy]\nnoise = 1\n')
    result = _run(["simulate", "--study", str(bad), "--site", f"a={tmp_path}", "--out", str(tmp_path / "o")], 120)
    assert result.returncode == 2 and "[privacy] noise: unknown key" in result.stderr
    good = _tiny_study(tmp_path)
    result = _run(["simulate", "--study", str(good), "--site", "no-equals-sign", "--out", str(tmp_path / "o")], 120)
    assert result.returncode == 2 and "Use NAME=BIDS_DIR" in result.stderr
    result = _run(["simulate", "--study", str(good), "--site", f"a={tmp_path}", "--out", str(tmp_path / "o")], 120)
    assert result.returncode == 2 and "no participants.tsv, nor a loose-file recordings.tsv" in result.stderr
