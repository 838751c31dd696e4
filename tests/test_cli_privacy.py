"""`fedneuro privacy ...`: planning, checking, status and audit, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from fedneuro.cli.main import app
from fedneuro.models.exchange import trainable_state
from fedneuro.privacy.accountant import epsilon_from_history
from fedneuro.privacy.ledger import LedgerEntry, PrivacyLedger
from fedneuro.study import default_study_path, load_study
from fedneuro.training.site import build_study_model

runner = CliRunner()


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_epsilon_recomputes_a_claim() -> None:
    out = _json(["privacy", "epsilon", "--noise-multiplier", "1.5", "--sample-rate", "0.25", "--steps", "40", "--delta", "1e-5"])
    assert out["epsilon"] == pytest.approx(min(out["by_accountant"].values()))
    assert out["by_accountant"]["rdp"] == pytest.approx(epsilon_from_history([(1.5, 0.25, 40)], delta=1e-5, accountant="rdp"))
    rdp_only = _json(["privacy", "epsilon", "--noise-multiplier", "1.5", "--sample-rate", "0.25", "--steps", "40",
                      "--delta", "1e-5", "--accountant", "rdp"])
    assert set(rdp_only["by_accountant"]) == {"rdp"}


def test_plan_meets_the_target_and_plots_the_curve(tmp_path: Path) -> None:
    out = _json(["privacy", "plan", "--epsilon", "4", "--delta", "1e-5", "--rounds", "5", "--steps-per-round", "8",
                 "--sample-rate", "0.25", "--plot", str(tmp_path / "curve.png")])
    epsilons = [p["epsilon"] for p in out["curve"]]
    assert epsilons == sorted(epsilons) and epsilons[-1] <= 4.0 and len(epsilons) == 5
    assert (tmp_path / "curve.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise-multiplier", "1", "--sample-rate", "2", "--steps", "10", "--delta", "1e-5"], "'--sample-rate': 2.0"),
        (["--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "10", "--delta", "0"], "'--delta': 0.0"),
        (["--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5", "--accountant", "gdp"], "Use best, rdp or prv"),
    ],
)
def test_bad_parameters_are_named(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["privacy", "epsilon", *args])
    assert result.exit_code == 2 and message in result.output


def test_status_reads_the_ledger_and_the_budget(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy-ledger.jsonl")
    for round_ in (1, 2):
        ledger.append([LedgerEntry(study_id="s1", round=round_, noise_multiplier=1.5, sample_rate=0.25, steps=8,
                                   max_grad_norm=0.5, unit="participant", max_windows_per_unit=4, delta=1e-5,
                                   recorded_at="2026-11-24T00:00:00+00:00")])
    (tmp_path / "policy.toml").write_text("max_epsilon_per_study = 5.0\n")
    out = _json(["privacy", "status", "--site-dir", str(tmp_path), "--policy", str(tmp_path / "policy.toml")])
    (study,) = out["studies"]
    assert study["study_id"] == "s1" and study["steps"] == 16 and study["unit"] == "participant"
    assert study["remaining"] == pytest.approx(5.0 - study["epsilon"])
    missing = runner.invoke(app, ["privacy", "status", "--site-dir", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no privacy ledger" in missing.output
    (tmp_path / "bad.toml").write_text("max_epsilon_per_study = -1\n")
    bad = runner.invoke(app, ["privacy", "status", "--site-dir", str(tmp_path), "--policy", str(tmp_path / "bad.toml")])
    assert bad.exit_code == 2 and "max_epsilon_per_study" in bad.output


def test_audit_of_an_untrained_adapter_finds_no_membership_signal(tmp_path: Path, data_consortium) -> None:
    study = load_study(default_study_path())
    study = study.model_copy(update={"model": study.model.model_copy(update={"backbone": "biot-tiny"})})
    study_path = tmp_path / "study.toml"
    text = default_study_path().read_text().replace('backbone = "biot-small"', 'backbone = "biot-tiny"')
    study_path.write_text(text)
    adapter = tmp_path / "adapter.safetensors"
    save_file(trainable_state(build_study_model(study).module), str(adapter))
    name, root = next(iter(data_consortium.items()))
    out = _json(["privacy", "audit", "--study", str(study_path), "--site", f"{name}={root}", "--adapter", str(adapter)])
    assert out["attack"] == "loss-threshold" and out["n_members"] > 0 and out["n_nonmembers"] > 0
    assert out["ci_low"] <= out["auc"] <= out["ci_high"]
    assert out["ci_low"] < 0.5 < out["ci_high"]  # an untrained model cannot tell members apart
