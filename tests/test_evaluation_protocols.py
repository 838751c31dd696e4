"""Evaluation protocols on the small fixture consortium: participant-disjoint test sets,
centralised / local-only / leave-one-site-out with and without DP, federated runs from their
summary, the report files and `fedneuro evaluate --json`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedneuro.evaluation.metrics import classification_metrics
from fedneuro.evaluation.protocols import (
    EvaluationConfig,
    EvaluationError,
    EvaluationReport,
    PrivacySetting,
    check_participant_disjoint,
    federated_result,
    load_sites,
    parse_protocols,
    pool,
    privacy_settings,
    run_evaluation,
    train_model,
)
from fedneuro.evaluation.report import load_report, markdown, wants_epsilon_plot, write_report
from fedneuro.models.exchange import exchange_manifest, trainable_state
from fedneuro.privacy.accountant import compute_epsilon, resolve_delta
from fedneuro.study import Study, default_study_path, load_study
from fedneuro.training.local import dp_schedule, predict_proba
from fedneuro.training.site import SiteData, build_study_model

ROUNDS = 2  # train_dp calls per model: enough to learn on the fixture, fast enough for CI
N_BOOT = 200


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # On a shared 2-core machine, torch's 2 OpenMP threads spin against other processes and a
    # 1-s training job can take 20 s; one thread keeps this module's timing predictable.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def study() -> Study:
    base = load_study(default_study_path())
    return base.model_copy(update={
        "model": base.model.model_copy(update={"backbone": "biot-tiny"}),
        "federation": base.federation.model_copy(update={"rounds": ROUNDS}),
    })


@pytest.fixture(scope="module")
def sites(study: Study, data_consortium: dict[str, Path]) -> dict[str, SiteData]:
    return load_sites(study, list(data_consortium.items()))


@pytest.fixture(scope="module")
def report(study: Study, sites: dict[str, SiteData]) -> EvaluationReport:
    return run_evaluation(study, sites, settings=privacy_settings(dp=True, non_private=True),
                          config=EvaluationConfig(n_boot=N_BOOT, seed=0))


def test_test_participants_never_trained_on(sites: dict[str, SiteData]) -> None:
    for name, data in sites.items():
        check_participant_disjoint(name, data)
        train = {data.train.participant_ids[i] for i in np.unique(data.train.participant)}
        test = {data.test.participant_ids[i] for i in np.unique(data.test.participant)}
        assert train and test and not train & test
    name, data = next(iter(sites.items()))
    leaky = replace(data, test=data.train.subset(data.train.participant_ids[:1]))
    with pytest.raises(EvaluationError, match=rf"site '{name}': participant\(s\) \['{data.train.participant_ids[0]}'\] are in both"):
        check_participant_disjoint(name, leaky)


def test_pooling_keeps_sites_participants_apart(sites: dict[str, SiteData]) -> None:
    pooled = pool(sites, list(sites), "train")
    assert len(pooled.keys) == len(set(pooled.keys)) == sum(len(d.train.participant_ids) for d in sites.values())
    assert len(np.unique(pooled.participant)) == len(pooled.keys) and len(pooled.X) == sum(len(d.train) for d in sites.values())


def test_centralised_learns(report: EvaluationReport, study: Study, sites: dict[str, SiteData]) -> None:
    untrained = pool(sites, list(sites), "test")
    before = classification_metrics(untrained.y, predict_proba(build_study_model(study).module, untrained.X),
                                    untrained.participant, n_boot=0)
    for setting in ("dp", "non-private"):
        pooled = report.result("centralised", setting).pooled
        assert pooled is not None and pooled.participant is not None
        assert pooled.window.value("balanced_accuracy") > 0.5  # chance for two classes
        assert pooled.window.n_samples == sum(len(d.test) for d in sites.values())
        assert pooled.participant.n_samples == sum(len(d.test.participant_ids) for d in sites.values())
    trained = report.result("centralised", "non-private").pooled.window  # type: ignore[union-attr]
    assert trained.value("balanced_accuracy") > 0.7
    assert trained.value("auroc") > before.value("auroc")  # training moved it, not the random backbone alone


def test_each_protocol_trains_on_what_it_says(report: EvaluationReport, sites: dict[str, SiteData]) -> None:
    names = list(sites)
    for setting in ("dp", "non-private"):
        (central,) = report.result("centralised", setting).models
        assert central.trained_on == names
        assert central.train_windows == sum(len(d.train) for d in sites.values())
        local = report.result("local-only", setting)
        assert [m.trained_on for m in local.models] == [[n] for n in names]
        assert set(local.cross_site) == set(names) and all(set(row) == set(names) for row in local.cross_site.values())
        assert all(local.per_site[n] == local.cross_site[n][n] for n in names)
        loso = report.result("leave-one-site-out", setting)
        assert [m.trained_on for m in loso.models] == [[o for o in names if o != n] for n in names]
        assert list(loso.per_site) == names
        for result in (report.result("centralised", setting), local, loso):
            assert set(result.site_summary["window"]) >= {"balanced_accuracy", "auroc", "ece"}
            summary = result.site_summary["window"]["balanced_accuracy"]
            values = {n: m.window.value("balanced_accuracy") for n, m in result.per_site.items()}
            assert summary.worst == min(values.values()) and values[summary.worst_site] == summary.worst
            assert summary.mean == pytest.approx(np.mean(list(values.values())))
            assert result.models and all(m.rounds == ROUNDS for m in result.models)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # Opacus PRV at q = 1
def test_dp_epsilon_is_the_accountants_over_the_steps_taken(report: EvaluationReport, study: Study,
                                                            sites: dict[str, SiteData]) -> None:
    for protocol in ("centralised", "local-only", "leave-one-site-out"):
        private, plain = report.result(protocol, "dp"), report.result(protocol, "non-private")
        assert private.private and not plain.private and plain.epsilon is None
        for model in private.models:
            data = pool(sites, model.trained_on, "train")
            schedule = dp_schedule(data.participant, training=study.training, privacy=study.privacy)
            assert model.steps == ROUNDS * study.training.local_epochs * schedule.steps_per_epoch
            delta = resolve_delta(study.privacy.delta, len(np.unique(data.participant)))
            expected = compute_epsilon([(study.privacy.noise_multiplier, schedule.sample_rate, model.steps)],
                                       delta=delta, accountant=study.privacy.accountant)
            assert model.epsilon == pytest.approx(expected.epsilon) and model.delta == delta and model.epsilon > 0
            assert model.noise_multiplier == study.privacy.noise_multiplier
        assert private.epsilon == max(m.epsilon for m in private.models)  # type: ignore[type-var]
        assert all(m.epsilon is None and m.noise_multiplier is None for m in plain.models)


def test_training_is_deterministic_by_seed(study: Study, sites: dict[str, SiteData]) -> None:
    data = pool(sites, [next(iter(sites))], "train")
    setting = PrivacySetting(name="dp", private=True)
    states = [trainable_state(train_model(study, data, setting, rounds=1, seed_parts=parts)[0])
              for parts in (("a",), ("a",), ("b",))]
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not np.array_equal(states[0][k], states[2][k]) for k in states[0])


def test_target_epsilon_plans_sigma_for_the_model(study: Study, sites: dict[str, SiteData]) -> None:
    data = pool(sites, [next(iter(sites))], "train")
    _, record = train_model(study, data, PrivacySetting(name="eps-3", private=True, target_epsilon=3.0),
                            rounds=1, seed_parts=("sweep",))
    assert record.epsilon is not None and 2.5 < record.epsilon <= 3.0
    assert record.noise_multiplier != study.privacy.noise_multiplier


def _write_run(out: Path, study: Study, sites: dict[str, SiteData], *, adapter: bool) -> Path:
    """A completed run's directory written by the federation's own StudyRecord."""
    from fedneuro.federation.results import StudyRecord, save_adapter
    from fedneuro.federation.rounds import RoundReport, SiteRoundReport

    model = build_study_model(study)
    record = StudyRecord(out, header={"study_id": study.study.id, "study_digest": study.digest(),
                                      "backbone": study.model.backbone,
                                      "privacy_labels": {"unit": "participant", "noise_multiplier": 1.5, "max_grad_norm": 0.5}})
    for r in range(1, ROUNDS + 1):
        record.add(RoundReport(round=r, balanced_accuracy=0.8, participant_balanced_accuracy=0.9, sites={
            name: SiteRoundReport(site=name, num_examples=len(d.train), privacy_units=len(d.train.participant_ids),
                                  epsilon=2.0 * r, delta=1e-5, epsilon_accountant="rdp", dp_steps=4,
                                  balanced_accuracy=0.7 + 0.05 * i, test_windows=len(d.test),
                                  test_participants=len(d.test.participant_ids))
            for i, (name, d) in enumerate(sites.items())}))
    if adapter:
        save_adapter(record.adapter_path, trainable_state(model.module),
                     {"study_id": study.study.id, "tensor_manifest_sha256": exchange_manifest(model).digest()})
    record.write(status="completed", wall_time_s=1.0)
    return record.summary_path


def test_federated_run_is_rescored_from_its_adapter(tmp_path: Path, study: Study, sites: dict[str, SiteData]) -> None:
    summary = _write_run(tmp_path / "run", study, sites, adapter=True)
    result = federated_result(summary.parent, study, sites, config=EvaluationConfig(n_boot=50))
    assert result.protocol == "federated" and result.epsilon == pytest.approx(2.0 * ROUNDS)
    assert set(result.per_site) == set(sites) and "re-scored" in result.notes[0]
    untrained = {n: classification_metrics(d.test.y, predict_proba(build_study_model(study).module, d.test.X),
                                           d.test.participant, n_boot=0) for n, d in sites.items()}
    for name, metrics in result.per_site.items():
        assert metrics.window.value("balanced_accuracy") == untrained[name].value("balanced_accuracy")
        assert metrics.window.metrics["auroc"].ci_low is not None  # full metrics, with intervals


def test_federated_run_without_adapter_reports_its_own_numbers(tmp_path: Path, study: Study,
                                                                sites: dict[str, SiteData]) -> None:
    summary = _write_run(tmp_path / "run", study, sites, adapter=False)
    result = federated_result(summary, study, sites)
    assert [m.value("balanced_accuracy") for m in (r.window for r in result.per_site.values())] == pytest.approx([0.7, 0.75, 0.8])
    assert result.pooled is not None and result.pooled.window.value("balanced_accuracy") == 0.8
    assert all(m.window.metrics["balanced_accuracy"].ci_low is None for m in result.per_site.values())
    assert "no global_adapter.safetensors" in result.notes[0]
    other = study.model_copy(update={"study": study.study.model_copy(update={"id": "another-study"})})
    with pytest.raises(EvaluationError, match="run of study 'demo-abnormal-eeg'.*pass the study file that run used"):
        federated_result(summary, other, sites)
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "status": "failed"}))
    with pytest.raises(EvaluationError, match="status is 'failed'.*--resume"):
        federated_result(summary, study, sites)


def test_report_files(tmp_path: Path, report: EvaluationReport) -> None:
    files = write_report(report, tmp_path / "eval")
    assert load_report(tmp_path / "eval") == report
    text = Path(files.markdown_path).read_text()
    assert "| centralised | DP (study σ) |" in text and "worst site (lowest)" in text and "Local-only models on every site" in text
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in files.plots)
    assert len(files.plots) == len(report.results)  # one DP setting: no ε curve
    assert not wants_epsilon_plot(report)
    swept = report.model_copy(update={"results": [*report.results, report.results[0].model_copy(
        update={"setting": "eps-1", "setting_label": "DP, target ε = 1", "epsilon": 1.0})]})
    assert wants_epsilon_plot(swept)
    plots = [Path(p).name for p in write_report(swept, tmp_path / "swept").plots]
    assert "accuracy-vs-epsilon.png" in plots and "per-site-centralised-eps-1.png" in plots
    assert "DP, target ε = 1" in markdown(swept)


def test_protocol_names_are_checked() -> None:
    assert parse_protocols("centralised, loso,local,loso") == ["centralised", "leave-one-site-out", "local-only"]
    with pytest.raises(EvaluationError, match=r"'--protocols': 'federated'.*--federated-summary"):
        parse_protocols("centralised,federated")
    with pytest.raises(EvaluationError, match="'--epsilon-sweep'.*> 0"):
        privacy_settings(epsilon_sweep=[4.0, 0.0])


def test_cli_evaluate_json(tmp_path: Path, data_consortium: dict[str, Path]) -> None:
    from fedneuro.cli.main import app

    study_file = tmp_path / "study.toml"
    study_file.write_text(default_study_path().read_text().replace('backbone = "biot-small"', 'backbone = "biot-tiny"'))
    args = ["evaluate", str(study_file), *[f"--site={n}={p}" for n, p in data_consortium.items()],
            "--out", str(tmp_path / "out"), "--protocols", "centralised", "--quick", "--n-boot", "50", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"evaluation", "files"}
    evaluation = payload["evaluation"]
    assert evaluation["quick"] is True and evaluation["rounds"] == 1 and evaluation["config"]["n_boot"] == 50
    assert [(r["protocol"], r["setting"]) for r in evaluation["results"]] == [("centralised", "dp")]
    assert set(evaluation["results"][0]["pooled"]["window"]["metrics"]) == {"balanced_accuracy", "auroc", "cohen_kappa", "macro_f1", "ece"}
    assert json.loads(Path(payload["files"]["json_path"]).read_text()) == evaluation
    bad = CliRunner().invoke(app, [*args[:-6], "--protocols", "federated"])
    assert bad.exit_code == 2 and "--federated-summary" in bad.output
