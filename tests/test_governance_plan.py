"""Run plans: the hash moves with every setting and the code; signed approvals; forged ones refused, each with its reason."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedneuro.cli.main import app
from fedneuro.governance.keys import fingerprint, generate_signing_key, load_signing_key, write_signing_key
from fedneuro.governance.plan import (
    CodeIdentity,
    PlanNotApproved,
    PlanPolicyError,
    PlanReview,
    approval_path,
    approve_plan,
    check_plan_approved,
    check_site_approved,
    code_identity,
    describe_plan,
    plan_hash,
    reject_plan,
    review_plan,
)
from fedneuro.governance.policy import SitePolicy
from fedneuro.governance.site import SiteConfig
from fedneuro.governance.study_signature import (
    StudySignatureError,
    read_study_signature,
    sign_study,
    signature_path_for,
    verify_study_signature,
    write_study_signature,
)
from fedneuro.study import Study, default_study_path, load_study

runner = CliRunner()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
TODAY = date(2026, 6, 1)
CODE = CodeIdentity(package_version="0.1.0", code_sha256="1" * 64)
POLICY = SitePolicy(accepted_purposes=["HMB"])


@pytest.fixture(scope="module")
def demo() -> Study:
    return load_study(default_study_path())


@pytest.fixture(scope="module")
def site_key() -> object:
    return generate_signing_key()


def _with(study: Study, **sections: dict) -> Study:
    data = study.model_dump(mode="json")
    for section, values in sections.items():
        target = data
        *path, last = section.split(".")
        for part in path:
            target = target[part]
        target[last] = {**target[last], **values}
    return Study.model_validate(data)


def _review(study: Study, policy: SitePolicy = POLICY, **kwargs: object) -> PlanReview:
    return review_plan(study, policy, code_identity=CODE, weights_sha256=None, today=TODAY, **kwargs)  # type: ignore[arg-type]


# -- the plan hash


@pytest.mark.parametrize(
    "change",
    [
        {"privacy": {"noise_multiplier": 1.4}},
        {"privacy": {"max_grad_norm": 0.6}},
        {"privacy": {"max_windows_per_participant": 5}},
        {"federation": {"rounds": 6}},
        {"model": {"backbone": "biot-tiny"}},
        {"model.adapter": {"rank": 4}},
        {"training": {"learning_rate": 0.05}},
        {"federation.secure_aggregation": {"enabled": False}, "federation": {"strategy": "trimmed-mean"}},
        {"governance.purpose": {"permission": "GRU"}},
        {"governance": {"max_epsilon": 7.0}},
        {"governance": {"allowed_outputs": ["adapter-tensors"]}},
        {"data": {"test_fraction": 0.25}},
    ],
    ids=lambda change: ",".join(change),
)
def test_any_setting_changes_the_plan_hash(demo: Study, change: dict) -> None:
    assert plan_hash(_with(demo, **change), code_identity=CODE) != plan_hash(demo, code_identity=CODE)


def test_the_code_identity_is_part_of_the_plan(demo: Study) -> None:
    other_code = CODE.model_copy(update={"code_sha256": "2" * 64})
    other_version = CODE.model_copy(update={"package_version": "0.1.1"})
    hashes = {plan_hash(demo, code_identity=c) for c in (CODE, other_code, other_version)}
    assert len(hashes) == 3


def test_the_plan_hash_is_stable(demo: Study) -> None:
    again = Study.from_json(demo.to_json())
    assert plan_hash(again, code_identity=CODE) == plan_hash(demo, code_identity=CODE)
    assert len(plan_hash(demo, code_identity=CODE)) == 64


def test_code_identity_hashes_source_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fakepkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (package / "sub" / "conf.toml").write_text("a = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = code_identity(("fakepkg",))
    (package / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (package / "notes.txt").write_text("not code")
    assert code_identity(("fakepkg",)) == first
    (package / "sub" / "conf.toml").write_text("a = 2\n")
    assert code_identity(("fakepkg",)) != first
    (package / "sub" / "conf.toml").write_text("a = 1\n")
    (package / "sub" / "conf.toml").rename(package / "conf.toml")  # same bytes, another path
    assert code_identity(("fakepkg",)) != first
    with pytest.raises(ModuleNotFoundError, match="package 'no_such_pkg' is not installed here"):
        code_identity(("no_such_pkg",))


def test_the_installed_code_has_an_identity() -> None:
    identity = code_identity()
    assert identity.package_version and len(identity.code_sha256) == 64


def test_the_plan_shows_this_sites_schedule(demo: Study) -> None:
    from fedneuro.privacy.engine import plan_schedule

    plan = describe_plan(demo, code_identity=CODE, weights_sha256=None, eligible_participants=100)
    assert plan.training_participants == 70  # test_fraction 0.3 held out
    schedule = plan_schedule(70, expected_units_per_step=demo.training.batch_size,
                             max_windows_per_unit=demo.privacy.max_windows_per_participant)
    assert plan.sample_rate == schedule.sample_rate
    assert plan.steps_per_round == schedule.steps_per_epoch * demo.training.local_epochs
    assert plan.weights_sha256 == "random-init" and plan.secure_aggregation
    assert set(plan.outputs) == {"adapter-tensors", "aggregate-metrics"}


# -- approve, reject, check


def test_approve_then_check(tmp_path: Path, demo: Study, site_key) -> None:
    review = _review(demo)
    assert review.approvable, review.violations
    approval = approve_plan(tmp_path, review, key=site_key, now=NOW, reason="IRB minute 12")
    assert approval_path(tmp_path, review.plan.plan_hash).is_file()
    checked = check_plan_approved(tmp_path, demo, public_key=site_key.public_key(), code_identity=CODE)
    assert checked == approval
    assert checked.decision == "approve" and checked.signer == fingerprint(site_key)
    assert checked.signed_at == "2026-06-01T12:00:00Z" and checked.reason == "IRB minute 12"


def test_rejection_replaces_approval_and_is_refused(tmp_path: Path, demo: Study, site_key) -> None:
    review = _review(demo)
    approve_plan(tmp_path, review, key=site_key, now=NOW)
    reject_plan(tmp_path, review, key=site_key, now=NOW, reason="ε cap above our budget")
    with pytest.raises(PlanNotApproved, match=r"site rejected plan .* of study demo-abnormal-eeg on 2026-06-01T12:00:00Z: ε cap above our budget") as caught:
        check_plan_approved(tmp_path, demo, public_key=site_key.public_key(), code_identity=CODE)
    assert caught.value.kind == "rejected"
    with pytest.raises(ValueError, match="a rejection needs a reason"):
        reject_plan(tmp_path, review, key=site_key, now=NOW, reason="  ")


def test_approving_a_plan_that_breaks_the_policy_is_refused(tmp_path: Path, demo: Study, site_key) -> None:
    strict = SitePolicy(accepted_purposes=["GRU"], max_epsilon_per_study=5.0)
    review = _review(demo, strict)
    with pytest.raises(PlanPolicyError, match=r"refusing to approve: the plan breaks this site's policy in 2 way\(s\):\n  - the study's purpose HMB.*\n  - the study may spend up to ε = 8"):
        approve_plan(tmp_path, review, key=site_key, now=NOW)
    assert not (tmp_path / "approvals").exists()


def test_no_approval_says_what_changed(tmp_path: Path, demo: Study, site_key) -> None:
    with pytest.raises(PlanNotApproved, match=r"this site has not approved plan .* of study demo-abnormal-eeg: no .*approvals") as caught:
        check_plan_approved(tmp_path, demo, public_key=site_key.public_key(), code_identity=CODE)
    assert caught.value.kind == "missing"
    approve_plan(tmp_path, _review(demo), key=site_key, now=NOW)
    new_code = CODE.model_copy(update={"code_sha256": "3" * 64})
    with pytest.raises(PlanNotApproved, match=r"earlier decisions on this study: plan .* \(approved 2026-06-01T12:00:00Z\): the code changed \(fedneuro 0.1.0 111111111111… → 0.1.0 333333333333…\)"):
        check_plan_approved(tmp_path, demo, public_key=site_key.public_key(), code_identity=new_code)
    more_noise = _with(demo, privacy={"noise_multiplier": 2.0})
    with pytest.raises(PlanNotApproved, match=r"the study's settings changed"):
        check_plan_approved(tmp_path, more_noise, public_key=site_key.public_key(), code_identity=CODE)


@pytest.mark.parametrize(
    ("field", "value"),
    [("decision", "approve"), ("reason", "fine by us"), ("signed_at", "2026-06-02T12:00:00Z"), ("weights_sha256", "ab" * 32)],
)
def test_an_edited_approval_is_refused(tmp_path: Path, demo: Study, site_key, field: str, value: str) -> None:
    review = _review(demo)
    reject_plan(tmp_path, review, key=site_key, now=NOW, reason="no")
    path = approval_path(tmp_path, review.plan.plan_hash)
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(PlanNotApproved, match=r"the signature does not verify with this site's key .*: the approval was edited after it was signed, or forged") as caught:
        check_plan_approved(tmp_path, demo, public_key=site_key.public_key(), code_identity=CODE)
    assert caught.value.kind == "signature"


def test_an_approval_signed_by_another_key_is_refused(tmp_path: Path, demo: Study, site_key) -> None:
    intruder = generate_signing_key()
    approve_plan(tmp_path, _review(demo), key=intruder, now=NOW)
    with pytest.raises(PlanNotApproved, match=rf"was signed by key {fingerprint(intruder)}, not by this site's key {fingerprint(site_key)}") as caught:
        check_plan_approved(tmp_path, demo, public_key=site_key.public_key(), code_identity=CODE)
    assert caught.value.kind == "wrong-key"


def test_an_approval_replayed_for_another_plan_is_refused(tmp_path: Path, demo: Study, site_key) -> None:
    approved = approve_plan(tmp_path, _review(demo), key=site_key, now=NOW)
    more_rounds = _with(demo, federation={"rounds": 50})
    target = approval_path(tmp_path, plan_hash(more_rounds, code_identity=CODE))
    shutil.copy(approval_path(tmp_path, approved.plan_hash), target)
    with pytest.raises(PlanNotApproved, match=rf"holds the site's decision on plan {approved.plan_hash[:16]}… \(study demo-abnormal-eeg\), not on this plan .*copied or replayed") as caught:
        check_plan_approved(tmp_path, more_rounds, public_key=site_key.public_key(), code_identity=CODE)
    assert caught.value.kind == "other-plan"


def test_a_malformed_approval_is_refused(tmp_path: Path, demo: Study, site_key) -> None:
    review = _review(demo)
    path = approval_path(tmp_path, review.plan.plan_hash)
    path.parent.mkdir(parents=True)
    path.write_text('{"decision": "approve"}')
    with pytest.raises(PlanNotApproved, match=r"is not a valid approval \(plan_hash: Field required\); refusing to run") as caught:
        check_plan_approved(tmp_path, demo, public_key=site_key.public_key(), code_identity=CODE)
    assert caught.value.kind == "malformed"


def test_the_site_check_uses_the_configured_key_and_the_running_code(tmp_path: Path, demo: Study) -> None:
    key_file = tmp_path / "kit" / "signing.key"
    write_signing_key(key_file, generate_signing_key())
    unkeyed = SiteConfig(name="hospital-a", bids_root=tmp_path, state_dir=tmp_path / "state")
    with pytest.raises(PlanNotApproved, match="site hospital-a has no signing_key in its configuration") as caught:
        check_site_approved(unkeyed, demo)
    assert caught.value.kind == "no-key"
    site = unkeyed.model_copy(update={"signing_key": key_file})
    with pytest.raises(PlanNotApproved, match="has not approved"):
        check_site_approved(site, demo)
    review = review_plan(demo, POLICY, code_identity=code_identity(), weights_sha256=None, today=TODAY)
    approve_plan(site.state_dir, review, key=load_signing_key(key_file), now=NOW)
    assert check_site_approved(site, demo).plan_hash == review.plan.plan_hash


# -- the coordinator's study signature


@pytest.fixture(scope="module")
def coordinator() -> object:
    return generate_signing_key()


def test_study_signature_round_trip(tmp_path: Path, demo: Study, coordinator) -> None:
    signature = sign_study(demo, coordinator, NOW)
    path = signature_path_for(tmp_path / "study.toml")
    assert path.name == "study.toml.sig"
    write_study_signature(path, signature)
    again = read_study_signature(path)
    assert again == signature and again.signed_at == "2026-06-01T12:00:00Z"
    others = [generate_signing_key().public_key(), coordinator.public_key()]
    assert verify_study_signature(demo, again, others) == fingerprint(coordinator)


def test_study_signature_untrusted_tampered_forged(demo: Study, coordinator) -> None:
    signature = sign_study(demo, coordinator, NOW)
    stranger = generate_signing_key()
    with pytest.raises(StudySignatureError, match=rf"untrusted key: the study was signed by {fingerprint(coordinator)}, which is not a trusted"):
        verify_study_signature(demo, signature, [stranger.public_key()])
    changed = _with(demo, federation={"rounds": 9})
    with pytest.raises(StudySignatureError, match=r"digest mismatch: .*the study was changed after the coordinator signed it"):
        verify_study_signature(changed, signature, [coordinator.public_key()])
    edited = signature.model_copy(update={"signed_at": "2027-01-01T00:00:00Z"})
    with pytest.raises(StudySignatureError, match=r"bad signature: the signature does not verify with key .*edited .* or forged"):
        verify_study_signature(demo, edited, [coordinator.public_key()])
    # A stranger signs but claims to be the coordinator.
    forged = sign_study(demo, stranger, NOW).model_copy(update={"signer": fingerprint(coordinator)})
    with pytest.raises(StudySignatureError, match="bad signature"):
        verify_study_signature(demo, forged, [coordinator.public_key()])


def test_bad_signature_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(StudySignatureError, match=r"absent.sig: no study signature; ask the coordinator"):
        read_study_signature(tmp_path / "absent.sig")
    (tmp_path / "bad.sig").write_text('{"study_id": "x"}')
    with pytest.raises(StudySignatureError, match=r"bad.sig: not a study signature: study_digest: Field required"):
        read_study_signature(tmp_path / "bad.sig")


def test_a_site_that_trusts_coordinator_keys_needs_their_signature(tmp_path: Path, demo: Study, coordinator) -> None:
    from fedneuro.governance.keys import public_key_pem

    pub = tmp_path / "coordinator.signing.pub"
    pub.write_bytes(public_key_pem(coordinator.public_key()))
    policy = SitePolicy(accepted_purposes=["HMB"], trusted_coordinator_keys=[Path("coordinator.signing.pub")])
    policy = policy.with_paths_relative_to(tmp_path)
    (unsigned,) = _review(demo, policy).violations
    assert "the study carries no coordinator signature (STUDY.sig)" in unsigned
    signed = _review(demo, policy, signature=sign_study(demo, coordinator, NOW))
    assert signed.approvable and signed.study_signer == fingerprint(coordinator)
    (wrong,) = _review(demo, policy, signature=sign_study(demo, generate_signing_key(), NOW)).violations
    assert wrong.startswith("coordinator signature: untrusted key")


# -- the CLI


@pytest.fixture()
def deployment(tmp_path: Path, coordinator) -> dict[str, Path]:
    """A signed copy of the demo study, a site config with a policy that trusts the coordinator."""
    study = tmp_path / "study.toml"
    study.write_text(default_study_path().read_text(encoding="utf-8"), encoding="utf-8")
    coordinator_key = tmp_path / "coordinator" / "signing.key"
    write_signing_key(coordinator_key, coordinator)
    site_key = tmp_path / "kit" / "signing.key"
    write_signing_key(site_key, generate_signing_key())
    shutil.copy(coordinator_key.with_suffix(".pub"), tmp_path / "kit" / "coordinator.signing.pub")
    config = tmp_path / "site.toml"
    config.write_text(
        f'name = "hospital-a"\nbids_root = "{tmp_path / "data"}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'signing_key = "{site_key}"\n'
        '[policy]\naccepted_purposes = ["HMB"]\nrequire_secure_aggregation = true\n'
        'trusted_coordinator_keys = ["kit/coordinator.signing.pub"]\n',
        encoding="utf-8",
    )
    return {"study": study, "config": config, "site_key": site_key, "coordinator_key": coordinator_key,
            "state": tmp_path / "state"}


def _invoke(args: list[str]) -> tuple[int, dict, str]:
    result = runner.invoke(app, args)
    try:
        payload = json.loads(result.stdout)
    except ValueError:
        payload = {}
    return result.exit_code, payload, " ".join(result.output.split())  # undo the console's line wrapping


def test_cli_sign_verify(deployment: dict[str, Path]) -> None:
    study, key = deployment["study"], deployment["coordinator_key"]
    code, out, text = _invoke(["study", "sign", str(study), "--key", str(key), "--json"])
    assert code == 0, text
    assert out["signature_file"] == str(signature_path_for(study)) and out["signer"].startswith("sha256:")
    code, out, text = _invoke(["study", "verify", str(study), "--pubkey", str(key.with_suffix(".pub")), "--json"])
    assert code == 0 and out["ok"] and out["signer"] == fingerprint(load_signing_key(key)), text
    other = deployment["site_key"].with_suffix(".pub")
    code, out, _ = _invoke(["study", "verify", str(study), "--pubkey", str(other), "--json"])
    assert code == 1 and not out["ok"] and out["problem"].startswith("untrusted key")
    study.write_text(study.read_text().replace("rounds = 5", "rounds = 6"))
    code, out, _ = _invoke(["study", "verify", str(study), "--pubkey", str(key.with_suffix(".pub")), "--json"])
    assert code == 1 and out["problem"].startswith("digest mismatch")


def test_cli_review_approve_reject(deployment: dict[str, Path]) -> None:
    study, config, state = deployment["study"], deployment["config"], deployment["state"]
    # Unsigned: review lists the violation and exits 1; approve is refused with it.
    code, out, _ = _invoke(["site", "review", str(study), "--config", str(config), "--json"])
    assert code == 1 and not out["approvable"]
    assert out["violations"] == [
        "the study carries no coordinator signature (STUDY.sig), but this site's policy accepts only studies signed by a "
        "trusted coordinator key; ask the coordinator to run `fedneuro study sign`"
    ]
    code, out, text = _invoke(["site", "approve", str(study), "--config", str(config), "--json"])
    assert code == 2 and out["decision"] is None and "refusing to approve" in text and "no coordinator signature" in text
    assert not (state / "approvals").exists()

    assert _invoke(["study", "sign", str(study), "--key", str(deployment["coordinator_key"])])[0] == 0
    code, out, text = _invoke(["site", "review", str(study), "--config", str(config), "--participants", "100", "--json"])
    assert code == 0 and out["approvable"], text
    plan = out["plan"]
    assert plan["privacy"]["noise_multiplier"] == 1.5 and plan["rounds"] == 5 and plan["secure_aggregation"]
    assert plan["governance"]["purpose"]["ethics"]["reference"] == "DEMO-IRB-2025-001"
    assert plan["steps_per_round"] == 8 and out["study_signer"].startswith("sha256:")
    assert out["notes"][0].startswith("planned ε at this site ≈ ") and out["recorded_decision"] is None

    code, _, text = _invoke(["site", "review", str(study), "--config", str(config)])
    assert code == 0, text
    for words in ("purpose HMB, non-commercial, not-for-profit", "requested by fedneuro demo consortium",
                  "ethics DEMO-IRB-2025-001, valid 2025-01-01 to 2030-12-31", "backbone biot-small, weights random-init",
                  "adapter lora+head, rank 8", "noise σ = 1.5", "C = 0.5", "rounds 5 (fedavg)",
                  "max ε 8 at any one site", "secure agg. on", "outputs adapter-tensors:", "study signed by sha256:",
                  "Policy: the plan meets this site's policy", f"plan hash: {plan['plan_hash']}"):
        assert words in text, words

    code, out, text = _invoke(["site", "approve", str(study), "--config", str(config), "--reason", "IRB ok", "--json"])
    assert code == 0, text
    assert out["decision"] == "approve" and out["plan_hash"] == plan["plan_hash"] and out["reason"] == "IRB ok"
    assert Path(out["file"]) == approval_path(state, plan["plan_hash"])
    assert out["study_signer"] == fingerprint(load_signing_key(deployment["coordinator_key"]))
    loaded = load_study(study)
    assert check_plan_approved(state, loaded, public_key=load_signing_key(deployment["site_key"]).public_key(),
                               code_identity=code_identity()).decision == "approve"

    code, out, text = _invoke(["site", "reject", str(study), "--config", str(config), "--reason", "withdrawn", "--json"])
    assert code == 0 and out["decision"] == "reject" and out["reason"] == "withdrawn", text
    with pytest.raises(PlanNotApproved, match="withdrawn"):
        check_plan_approved(state, loaded, public_key=load_signing_key(deployment["site_key"]).public_key(),
                            code_identity=code_identity())
    code, out, _ = _invoke(["site", "review", str(study), "--config", str(config), "--json"])
    assert out["recorded_decision"]["decision"] == "reject"


def test_cli_refuses_a_key_that_is_not_the_sites(deployment: dict[str, Path], tmp_path: Path) -> None:
    _invoke(["study", "sign", str(deployment["study"]), "--key", str(deployment["coordinator_key"])])
    other = tmp_path / "other.key"
    write_signing_key(other, generate_signing_key())
    code, _, text = _invoke(["site", "approve", str(deployment["study"]), "--config", str(deployment["config"]),
                             "--key", str(other)])
    assert code == 2 and "is not this site's signing_key" in text


def test_cli_names_bad_inputs(deployment: dict[str, Path], tmp_path: Path) -> None:
    code, _, text = _invoke(["site", "review", str(tmp_path / "nope.toml"), "--config", str(deployment["config"])])
    assert code == 2 and "cannot read study file" in text
    code, _, text = _invoke(["site", "review", str(deployment["study"]), "--config", str(deployment["config"]),
                             "--date", "June"])
    assert code == 2 and "Invalid value for '--date': 'June'" in text
    bad = tmp_path / "bad-site.toml"
    bad.write_text(deployment["config"].read_text().replace('["HMB"]', '["HBM"]'))
    code, _, text = _invoke(["site", "review", str(deployment["study"]), "--config", str(bad)])
    assert code == 2 and "unknown DUO term 'HBM'" in text
    code, _, text = _invoke(["site", "reject", str(deployment["study"]), "--config", str(deployment["config"])])
    assert code == 2 and "Missing option '--reason'" in text
