"""The site's governance gate inside the real ClientApp: ineligible participants' files are
never opened, a withdrawal takes effect from the next round and is traceable, and a study the
site's policy or consents do not cover is refused before any recording is read."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client import site_work
from client.app import app as client_app
from sites import small_cohort, write_site_config

from fedneuro.federation.codec import encode_arrays
from fedneuro.federation.launch import load_site_config
from fedneuro.governance.consent import withdraw_participant
from fedneuro.governance.contributions import contributions_path, impact, read_contributions
from fedneuro.governance.gate import GovernanceRefusal, admit
from fedneuro.models.exchange import exchange_manifest, trainable_state
from fedneuro.study import Study, default_study_path, load_study
from fedneuro.training.site import build_study_model, site_cohort

_OPENED: list[str] = []
_SPYING = [False]


def _spy(event: str, args: tuple) -> None:
    if _SPYING[0] and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_spy)  # audit hooks cannot be removed; the flag keeps it quiet outside these tests


@pytest.fixture(scope="module")
def study() -> Study:
    base = load_study(default_study_path())
    return small_cohort(base.model_copy(update={"model": base.model.model_copy(update={"backbone": "biot-tiny"})}))


def _train(study: Study, site_config: Path, server_round: int) -> Message:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    model = build_study_model(study)
    config = {"study": study.to_json(), "manifest": exchange_manifest(model).to_json(), "server-round": server_round}
    message = Message(content=RecordDict({"arrays": encode_arrays(trainable_state(model.module)), "config": ConfigRecord(config)}),
                      dst_node_id=1, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=1, node_config={"site-config": str(site_config)}, state=RecordDict(), run_config={})
    return client_app(message, context)


def _opened_during(call) -> list[str]:  # type: ignore[no-untyped-def]
    site_work._DATA.clear()  # nothing from an earlier test in this process: read from disk
    _OPENED.clear()
    _SPYING[0] = True
    try:
        call()
    finally:
        _SPYING[0] = False
    return list(_OPENED)


def test_ineligible_participants_files_are_never_opened(tmp_path: Path, data_consortium, study: Study) -> None:
    name, root = next(iter(data_consortium.items()))
    config = write_site_config(tmp_path, name, root, noise_seed=1)
    site = load_site_config(config)
    universe = site_cohort(root, study)
    admitted = admit(site, study, universe, today=datetime.now(UTC).date(), weights_sha256="random-init", study_signature=None)
    everyone = sorted(p.name for p in root.glob("sub-*"))
    excluded = sorted(set(everyone) - set(admitted.cohort.participant_ids))
    assert excluded, "the synthetic site has participants without (covering) consent"

    opened = _opened_during(lambda: _train(study, config, 1))
    recordings = [p for p in opened if str(root) in p and "/sub-" in p]
    assert recordings, "the spy saw the admitted participants' recordings being read"
    touched = sorted({pid for pid in excluded for p in recordings if f"/{pid}/" in p or f"/{pid}_" in p})
    assert touched == [], f"files of ineligible participants were opened: {touched}"


def test_a_withdrawal_takes_effect_from_the_next_round_and_is_traceable(tmp_path: Path, data_consortium, study: Study) -> None:
    name, root = next(iter(data_consortium.items()))
    config = write_site_config(tmp_path, name, root, noise_seed=2)
    state = tmp_path / name
    assert not _train(study, config, 1).has_error()
    used_round_1 = read_contributions(contributions_path(state))[-1].participants
    withdrawn = used_round_1[0]
    withdraw_participant(state, withdrawn, on=date.today())

    opened = _opened_during(lambda: _train(study, config, 2))
    assert not [p for p in opened if f"/{withdrawn}/" in p or f"/{withdrawn}_" in p]
    records = read_contributions(contributions_path(state))
    assert withdrawn in records[0].participants and withdrawn not in records[-1].participants
    assert [(i.study_id, i.round) for i in impact(contributions_path(state), withdrawn)] == [(study.study.id, 1)]


def test_a_study_outside_the_sites_policy_or_consents_is_refused_before_any_file_is_read(tmp_path: Path, data_consortium, study: Study) -> None:
    name, root = next(iter(data_consortium.items()))
    other_purpose = write_site_config(tmp_path / "gru", name, root, noise_seed=3, policy={"accepted_purposes": ["GRU"]})
    with pytest.raises(GovernanceRefusal, match=f"site {name}: study {study.study.id} violates this site's policy"):
        _opened_during(lambda: _train(study, other_purpose, 1))
    assert not [p for p in _OPENED if "/sub-" in p]  # refused before any recording was read
    no_registry = write_site_config(tmp_path / "none", name, root, noise_seed=3, consents=False)
    with pytest.raises(GovernanceRefusal, match="has no consent registry; import consents with `fedneuro consent import`"):
        _opened_during(lambda: _train(study, no_registry, 1))
    assert not [p for p in _OPENED if "/sub-" in p]
