"""The site's ClientApp, called with real Flower messages: what leaves the site."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.app import app as client_app
from sites import small_cohort, write_site_config

from fedneuro.federation.codec import encode_arrays
from fedneuro.federation.launch import LaunchError
from fedneuro.models.exchange import exchange_manifest, trainable_state
from fedneuro.models.manifest import ExchangeError
from fedneuro.privacy.ledger import PrivacyLedger
from fedneuro.study import Study, default_study_path, load_study
from fedneuro.training.site import build_study_model

ALLOWED_TRAIN_METRICS = {"num-examples", "privacy-units", "train-loss", "dp-steps", "epsilon", "delta"}
ALLOWED_EVAL_METRICS = {"num-examples", "eval-loss", "window-confusion", "participant-confusion"}


@pytest.fixture(scope="module")
def study() -> Study:
    base = load_study(default_study_path())
    return small_cohort(base.model_copy(update={"model": base.model.model_copy(update={"backbone": "biot-tiny"})}))


@pytest.fixture()
def site_config(tmp_path: Path, data_consortium: dict[str, Path]) -> Path:
    name, root = next(iter(data_consortium.items()))
    return write_site_config(tmp_path, name, root, noise_seed=3)


def _call(kind: str, study: Study, site_config: Path, server_round: int = 1, coordinator_study: Study | None = None) -> Message:
    # Flower's runtime sets the task identity before building messages; do the same.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    coordinator_model = build_study_model(coordinator_study or study)
    arrays = encode_arrays(trainable_state(coordinator_model.module))
    config = {"study": study.to_json(), "manifest": exchange_manifest(coordinator_model).to_json(), "server-round": server_round}
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
    message = Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN if kind == "train" else MessageType.EVALUATE)
    context = Context(run_id=1, node_id=1, node_config={"site-config": str(site_config)}, state=RecordDict(), run_config={})
    return client_app(message, context)


def _strings(record: RecordDict) -> str:
    """Every name and value that would cross the wire, as one string."""
    parts = []
    for key, value in record.items():
        parts.append(key)
        for k, v in value.items():
            parts.append(k)
            if not hasattr(v, "data"):
                parts.append(str(v))
    return " ".join(parts)


def test_train_reply_holds_only_adapter_tensors_and_aggregate_metrics(study, site_config, data_consortium) -> None:
    name, root = next(iter(data_consortium.items()))
    reply = _call("train", study, site_config)
    assert not reply.has_error(), reply.error
    assert set(reply.content.keys()) == {"arrays", "metrics", "site"}
    names = list(reply.content["arrays"].keys())
    assert names == sorted(names)
    assert all(("lora_A" in n or "lora_B" in n or "classification_head" in n) for n in names)
    assert set(reply.content["metrics"].keys()) == ALLOWED_TRAIN_METRICS
    assert set(reply.content["site"].keys()) == {"name", "epsilon-accountant", "manifest-sha256"}
    assert reply.content["site"]["name"] == name and reply.content["site"]["epsilon-accountant"] in {"rdp", "prv"}
    wire = _strings(reply.content)
    assert "sub-" not in wire and str(root) not in wire and "/" not in wire
    assert reply.content["metrics"]["epsilon"] > 0


def test_epsilon_accumulates_in_the_site_ledger_across_rounds(study, site_config) -> None:
    first = _call("train", study, site_config, server_round=1).content["metrics"]["epsilon"]
    second = _call("train", study, site_config, server_round=2).content["metrics"]["epsilon"]
    assert 0 < first < second
    state_dir = Path(json.loads(site_config.read_text())["state_dir"])
    entries = PrivacyLedger(state_dir / "privacy-ledger.jsonl").entries(study.study.id)
    assert [e.round for e in entries] == [1, 2]


def test_evaluate_reply_holds_confusion_counts_only(study, site_config) -> None:
    reply = _call("evaluate", study, site_config)
    assert not reply.has_error(), reply.error
    assert set(reply.content.keys()) == {"metrics", "site"}
    metrics = reply.content["metrics"]
    assert set(metrics.keys()) == ALLOWED_EVAL_METRICS
    window = np.asarray(metrics["window-confusion"])
    assert window.size == study.data.n_classes**2 and window.sum() == metrics["num-examples"]
    assert "sub-" not in _strings(reply.content)


def test_a_missing_site_config_names_the_file(study, tmp_path) -> None:
    # Flower's runtime turns this exception into an error reply to the coordinator.
    with pytest.raises(LaunchError, match="cannot read site config .*absent.json"):
        _call("train", study, tmp_path / "absent.json")


def test_a_global_model_for_another_model_is_refused_before_training(study, site_config) -> None:
    other = study.model_copy(update={"study": study.study.model_copy(update={"seed": study.study.seed + 1})})
    with pytest.raises(ExchangeError, match=r"seed: site has 7, coordinator sent 8"):
        _call("train", study, site_config, coordinator_study=other)
    state_dir = Path(json.loads(site_config.read_text())["state_dir"])
    assert PrivacyLedger(state_dir / "privacy-ledger.jsonl").entries() == []


def test_a_round_past_the_sites_lifetime_budget_is_refused_before_training(study, tmp_path, data_consortium) -> None:
    from fedneuro.privacy.budget import BudgetExceeded
    from fedneuro.privacy.ledger import LedgerEntry

    name, root = next(iter(data_consortium.items()))
    config = write_site_config(tmp_path / "budget", name, root, noise_seed=4,
                               policy={"max_epsilon_per_study": 8.0, "max_epsilon_lifetime": 8.0})
    ledger = PrivacyLedger(tmp_path / "budget" / name / "privacy-ledger.jsonl")
    # An earlier study on the same participants already spent most of the lifetime budget.
    ledger.append([LedgerEntry(study_id="earlier", round=1, noise_multiplier=0.8, sample_rate=0.5, steps=40,
                               max_grad_norm=1.0, unit="participant", delta=1e-5, recorded_at="2026-01-01T00:00:00Z")])
    with pytest.raises(BudgetExceeded, match=rf"site {name} refuses round 1 of study {study.study.id}: .*lifetime ε over all studies"):
        _call("train", study, config)
    assert ledger.entries(study.study.id) == []  # nothing trained, nothing spent


def test_metrics_over_too_few_participants_are_never_sent_and_nothing_is_spent(study, tmp_path, data_consortium) -> None:
    from fedneuro.governance.gate import GovernanceRefusal

    name, root = next(iter(data_consortium.items()))
    config = write_site_config(tmp_path / "floor", name, root, noise_seed=5)
    # 9 participants pass the gate (≥ min_cohort 8) but only about 6 are in the training split.
    strict = study.model_copy(update={"governance": study.governance.model_copy(
        update={"min_cohort": 8, "min_participants_per_metric": 8})})
    with pytest.raises(GovernanceRefusal, match=rf"site {name}: training metrics would cover \d participants, below the study's "
                                                r"min_participants_per_metric 8; nothing is sent"):
        _call("train", strict, config)
    assert PrivacyLedger(tmp_path / "floor" / name / "privacy-ledger.jsonl").entries() == []
