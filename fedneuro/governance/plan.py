"""Run plans and the site's signed decision on them.

A *plan* is everything that decides what a run does with a site's data: the study file
(purpose, model, adapter, DP parameters, training, rounds, secure aggregation, outputs) and
the code that will execute it. :func:`plan_hash` names a plan; the site operator reviews it
(``fedneuro site review``) and signs a decision with the site's Ed25519 key (``fedneuro site
approve`` / ``reject``), stored as ``<state_dir>/approvals/<plan_hash>.json``.

Flower's Control API is unauthenticated: anyone who reaches the SuperLink can submit a run,
and it executes on every SuperNode. So before it touches data the ClientApp calls
:func:`check_plan_approved` with the study it received and the code it is running; any
change to either (σ, a round more, another backbone, an edited module) is a new plan that
nobody approved.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from datetime import date, datetime, timezone
from importlib import util as import_util
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedneuro import __version__
from fedneuro.atomic import write_bytes_atomic
from fedneuro.governance.keys import KeyFileError, fingerprint, load_signing_key, sign, verify
from fedneuro.governance.policy import RANDOM_INIT, SitePolicy, check_study_against_policy
from fedneuro.governance.site import SiteConfig
from fedneuro.governance.study_signature import StudySignature, StudySignatureError, verify_study_signature
from fedneuro.models.spec import AdapterSpec
from fedneuro.privacy.spec import PrivacySpec
from fedneuro.study import STUDY_OUTPUTS, GovernanceSpec, Study

__all__ = [
    "APPROVALS_DIR",
    "Approval",
    "CodeIdentity",
    "PlanNotApproved",
    "PlanPolicyError",
    "PlanReview",
    "RunPlan",
    "approval_path",
    "approve_plan",
    "check_plan_approved",
    "check_site_approved",
    "code_identity",
    "describe_plan",
    "plan_hash",
    "read_decision",
    "reject_plan",
    "review_plan",
]

APPROVALS_DIR = "approvals"
CODE_PACKAGES = ("fedneuro", "client", "server")
_PLAN_DOMAIN = "fedneuro-run-plan-v1"
_APPROVAL_DOMAIN = b"fedneuro-approval-v1\n"
_HEX64 = r"^[0-9a-f]{64}$"
Decision = Literal["approve", "reject"]


class PlanPolicyError(PermissionError):
    """The site's policy forbids the plan: approving it is refused, every violation listed."""

    def __init__(self, violations: Sequence[str]) -> None:
        self.violations = list(violations)
        listed = "\n".join(f"  - {v}" for v in self.violations)
        super().__init__(f"refusing to approve: the plan breaks this site's policy in {len(self.violations)} way(s):\n{listed}")


class PlanNotApproved(PermissionError):
    """The site has no valid approval of this exact plan; ``kind`` says why, the message how to fix it."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind  # missing, malformed, wrong-key, signature, other-plan, rejected
        super().__init__(message)


class CodeIdentity(BaseModel):
    """Which code runs a plan: the package version and a hash of its source files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    package_version: str
    code_sha256: str = Field(pattern=_HEX64, description="sha256 over the .py and .toml files of fedneuro, client, server")


def code_identity(packages: Sequence[str] = CODE_PACKAGES) -> CodeIdentity:
    """Hash the installed source: sorted ``package/relative/path`` + bytes of every .py and .toml.

    Paths are length-prefixed with the bytes, so moving code between files changes the hash
    too. ``__pycache__`` is left out (it depends on the interpreter, not on the code).
    """
    digest = hashlib.sha256()
    for name, path in sorted(_source_files(packages)):
        data = path.read_bytes()
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "big") + encoded + len(data).to_bytes(8, "big") + data)
    return CodeIdentity(package_version=__version__, code_sha256=digest.hexdigest())


def _source_files(packages: Sequence[str]) -> list[tuple[str, Path]]:
    files = []
    for package in packages:
        spec = import_util.find_spec(package)  # finds without importing (client/ imports flwr)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"package {package!r} is not installed here, so the code that would run cannot be identified; "
                "install fedneuro with its client and server packages (pip install .)"
            )
        for root in map(Path, spec.submodule_search_locations):
            for path in root.rglob("*"):
                if path.suffix in {".py", ".toml"} and path.is_file() and "__pycache__" not in path.parts:
                    files.append((f"{package}/{path.relative_to(root).as_posix()}", path))
    return files


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def plan_hash(study: Study, *, code_identity: CodeIdentity) -> str:
    """sha256 of the canonical JSON of the plan: the whole study and the code identity.

    The study holds the complete training, privacy and federation configuration (the round
    config the coordinator sends is derived from it), its ``[governance]`` declaration and
    the model; they are named separately too so that the plan reads as what it is.
    """
    manifest = study.model_dump(mode="json")
    payload = {
        "domain": _PLAN_DOMAIN,
        "study": manifest,
        "code": code_identity.model_dump(mode="json"),
        "training": manifest["training"],
        "privacy": manifest["privacy"],
        "federation": manifest["federation"],
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()


class RunPlan(BaseModel):
    """A plan in the words a site operator reviews."""

    model_config = ConfigDict(extra="forbid")

    plan_hash: str
    study_id: str
    title: str
    study_digest: str
    modality: str
    governance: GovernanceSpec | None
    backbone: str
    weights_file: str | None
    weights_sha256: str = Field(description=f"sha256 of the weights file this site would load, or {RANDOM_INIT!r}")
    adapter: AdapterSpec
    privacy: PrivacySpec
    local_epochs: int
    batch_size: int = Field(description="expected privacy units per step (Poisson sampling)")
    optimizer: str
    learning_rate: float
    rounds: int
    strategy: str
    secure_aggregation: bool
    max_update_norm: float | None
    eligible_participants: int | None
    training_participants: int | None = Field(
        description="about how many of them train (the rest are held out: test_fraction, stratified by label)"
    )
    sample_rate: float | None = Field(description="q per step at this site (needs eligible_participants)")
    steps_per_round: int | None = Field(description="DP steps per round at this site (needs eligible_participants)")
    outputs: dict[str, str] = Field(description="what leaves the site, with what each output is")
    code_identity: CodeIdentity


def describe_plan(
    study: Study, *, code_identity: CodeIdentity, weights_sha256: str | None, eligible_participants: int | None = None
) -> RunPlan:
    """The plan of ``study`` under ``code_identity``, in reviewable form.

    With ``eligible_participants`` (participant unit only) the sampling rate and the DP steps
    per round are about those this site would take: its training participants are the
    eligible ones less the held-out share (``data.splits`` rounds per class, so ±1 per class),
    scheduled as ``privacy.engine.plan_schedule`` does.
    """
    training, privacy, federation = study.training, study.privacy, study.federation
    train_n = sample_rate = steps = None
    if eligible_participants and eligible_participants >= 2 and privacy.unit == "participant":
        spec = study.mri if study.study.modality == "mri" and study.mri is not None else study.data
        held_out = min(max(round(eligible_participants * spec.test_fraction), 1), eligible_participants - 1)
        train_n = eligible_participants - held_out
        batch = min(training.batch_size, train_n)
        sample_rate = batch / train_n
        steps = max(1, round(train_n / batch)) * training.local_epochs
    outputs = study.governance.allowed_outputs if study.governance else []
    return RunPlan(
        plan_hash=plan_hash(study, code_identity=code_identity),
        study_id=study.study.id,
        title=study.study.title,
        study_digest=study.digest(),
        modality=study.study.modality,
        governance=study.governance,
        backbone=study.model.backbone,
        weights_file=str(study.model.weights) if study.model.weights is not None else None,
        weights_sha256=weights_sha256 or RANDOM_INIT,
        adapter=study.model.adapter,
        privacy=privacy,
        local_epochs=training.local_epochs,
        batch_size=training.batch_size,
        optimizer=training.optimizer,
        learning_rate=training.learning_rate,
        rounds=federation.rounds,
        strategy=federation.strategy,
        secure_aggregation=federation.secure_aggregation.enabled,
        max_update_norm=federation.max_update_norm,
        eligible_participants=eligible_participants,
        training_participants=train_n,
        sample_rate=sample_rate,
        steps_per_round=steps,
        outputs={name: STUDY_OUTPUTS[name] for name in outputs},
        code_identity=code_identity,
    )


class PlanReview(BaseModel):
    """A plan, everything the site's policy has against it, and what the reviewer should know."""

    model_config = ConfigDict(extra="forbid")

    plan: RunPlan
    violations: list[str] = Field(description="policy violations: approval is refused while any remain")
    notes: list[str] = Field(description="facts for the reviewer that do not block approval")
    study_signer: str | None = Field(description="fingerprint of the trusted coordinator key that signed the study")

    @property
    def approvable(self) -> bool:
        return not self.violations


def review_plan(
    study: Study,
    policy: SitePolicy,
    *,
    code_identity: CodeIdentity,
    weights_sha256: str | None,
    today: date,
    signature: StudySignature | None = None,
    eligible_participants: int | None = None,
) -> PlanReview:
    """Describe the plan and check it against ``policy`` and the coordinator's signature.

    ``policy`` must have its key paths resolved (``load_site_policy`` or
    ``with_paths_relative_to``); unreadable key files raise ``SitePolicyError``.
    """
    plan = describe_plan(study, code_identity=code_identity, weights_sha256=weights_sha256,
                         eligible_participants=eligible_participants)
    violations = check_study_against_policy(study, policy, weights_sha256=weights_sha256, today=today,
                                            eligible_participants=eligible_participants)
    notes: list[str] = []
    signer = None
    trusted = policy.trusted_keys()
    if trusted:
        if signature is None:
            violations.append(
                "the study carries no coordinator signature (STUDY.sig), but this site's policy accepts only studies "
                "signed by a trusted coordinator key; ask the coordinator to run `fedneuro study sign`"
            )
        else:
            try:
                signer = verify_study_signature(study, signature, trusted)
            except StudySignatureError as error:
                violations.append(f"coordinator signature: {error}")
    else:
        notes.append(
            "this site's policy trusts no coordinator key (trusted_coordinator_keys), so the study's origin is not "
            "checked: confirm with the coordinator that this is their study"
        )
    governance = study.governance
    if governance is not None and governance.purpose.ethics is None:
        notes.append("the study declares no ethics approval: consents with the IRB modifier will not cover it")
    if eligible_participants is None:
        notes.append("eligible participants not given: sampling rate, steps per round and cohort floors not checked")
    return PlanReview(plan=plan, violations=violations, notes=notes, study_signer=signer)


class Approval(BaseModel):
    """``<state_dir>/approvals/<plan_hash>.json``: the site's signed decision on one plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plan_hash: str = Field(pattern=_HEX64)
    decision: Decision
    reason: str = ""
    study_id: str
    study_digest: str = Field(pattern=_HEX64)
    code_identity: CodeIdentity
    weights_sha256: str = Field(description=f"the weights the site reviewed: sha256 or {RANDOM_INIT!r}")
    study_signer: str | None = Field(default=None, description="the trusted coordinator key that signed the study, if checked")
    signer: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="fingerprint of the site's signing key")
    signed_at: str = Field(description="ISO 8601 UTC")
    signature: str = Field(min_length=1, description="base64 Ed25519 over the domain-separated canonical fields")

    def signed_message(self) -> bytes:
        return _APPROVAL_DOMAIN + _canonical(self.model_dump(mode="json", exclude={"signature"}))


def approvals_dir(state_dir: Path) -> Path:
    return Path(state_dir) / APPROVALS_DIR


def approval_path(state_dir: Path, plan_hash: str) -> Path:
    return approvals_dir(state_dir) / f"{plan_hash}.json"


def approve_plan(state_dir: Path, review: PlanReview, *, key: Ed25519PrivateKey, now: datetime, reason: str = "") -> Approval:
    """Sign and store an approval; :class:`PlanPolicyError` while the review lists violations."""
    if review.violations:
        raise PlanPolicyError(review.violations)
    return _decide(state_dir, review, "approve", key=key, now=now, reason=reason)


def reject_plan(state_dir: Path, review: PlanReview, *, key: Ed25519PrivateKey, now: datetime, reason: str) -> Approval:
    """Sign and store a rejection (it replaces an earlier approval of the same plan)."""
    if not reason.strip():
        raise ValueError("a rejection needs a reason for the coordinator, e.g. --reason 'ε cap above our budget'")
    return _decide(state_dir, review, "reject", key=key, now=now, reason=reason)


def _decide(state_dir: Path, review: PlanReview, decision: Decision, *, key: Ed25519PrivateKey, now: datetime, reason: str) -> Approval:
    plan = review.plan
    if now.tzinfo is None:
        raise ValueError(f"now ({now}) needs a time zone; pass datetime.now(timezone.utc)")
    unsigned = Approval(
        plan_hash=plan.plan_hash, decision=decision, reason=reason.strip(), study_id=plan.study_id,
        study_digest=plan.study_digest, code_identity=plan.code_identity, weights_sha256=plan.weights_sha256,
        study_signer=review.study_signer, signer=fingerprint(key), signed_at=now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        signature="-",
    )
    approval = unsigned.model_copy(update={"signature": base64.b64encode(sign(key, unsigned.signed_message())).decode()})
    write_bytes_atomic(approval_path(state_dir, plan.plan_hash), (approval.model_dump_json(indent=2) + "\n").encode())
    return approval


def read_decision(state_dir: Path, plan_hash: str) -> Approval | None:
    """The recorded decision on a plan, parsed but NOT verified (for display); None if there is none."""
    try:
        return Approval.model_validate_json(approval_path(state_dir, plan_hash).read_bytes())
    except (OSError, ValidationError):
        return None


def check_plan_approved(
    state_dir: Path, study: Study, *, public_key: Ed25519PublicKey, code_identity: CodeIdentity
) -> Approval:
    """The site's valid approval of exactly this plan, or :class:`PlanNotApproved` saying why not.

    ``public_key`` is the site's own signing key (from the site's configuration, never from
    the message); ``code_identity`` is that of the running code (:func:`code_identity`).
    """
    expected = plan_hash(study, code_identity=code_identity)
    path = approval_path(state_dir, expected)
    own = fingerprint(public_key)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PlanNotApproved("missing", _missing_message(state_dir, study, expected, code_identity)) from None
    except OSError as error:
        raise PlanNotApproved("missing", f"cannot read the approval {path} ({error.strerror})") from None
    try:
        approval = Approval.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        raise PlanNotApproved("malformed", (
            f"{path} is not a valid approval ({'.'.join(map(str, first['loc'])) or '(file)'}: {first['msg']}); "
            "refusing to run. Review and approve the plan again with `fedneuro site approve`"
        )) from None
    if approval.signer != own:
        raise PlanNotApproved("wrong-key", (
            f"{path} was signed by key {approval.signer}, not by this site's key {own}: refusing an approval this "
            "site did not sign"
        ))
    try:
        signature = base64.b64decode(approval.signature, validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not verify(public_key, signature, approval.signed_message()):
        raise PlanNotApproved("signature", (
            f"{path}: the signature does not verify with this site's key {own}: the approval was edited after it "
            "was signed, or forged; refusing to run"
        ))
    if approval.plan_hash != expected or approval.study_digest != study.digest() or approval.code_identity != code_identity:
        raise PlanNotApproved("other-plan", (
            f"{path} holds the site's decision on plan {approval.plan_hash[:16]}… (study {approval.study_id}), not "
            f"on this plan {expected[:16]}…: an approval copied or replayed from another plan; refusing to run"
        ))
    if approval.decision != "approve":
        raise PlanNotApproved("rejected", (
            f"site rejected plan {expected[:16]}… of study {study.study.id} on {approval.signed_at}: "
            f"{approval.reason or 'no reason given'}"
        ))
    return approval


def check_site_approved(site: SiteConfig, study: Study) -> Approval:
    """:func:`check_plan_approved` for a site as configured, with the code running now.

    The site's key comes from its own configuration (``signing_key``); a site without one
    has approved nothing, so every plan is refused.
    """
    if site.signing_key is None:
        raise PlanNotApproved("no-key", (
            f"site {site.name} has no signing_key in its configuration, so it has approved no run plan; set "
            "signing_key to the site kit's signing.key, then review and approve the study with `fedneuro site approve`"
        ))
    try:
        public_key = load_signing_key(site.signing_key).public_key()
    except KeyFileError as error:
        raise PlanNotApproved("no-key", f"site {site.name}: signing_key: {error}") from None
    return check_plan_approved(site.state_dir, study, public_key=public_key, code_identity=code_identity())


def _missing_message(state_dir: Path, study: Study, expected: str, code: CodeIdentity) -> str:
    message = (
        f"this site has not approved plan {expected[:16]}… of study {study.study.id}: no "
        f"{approval_path(state_dir, expected)}. Review it with `fedneuro site review STUDY --config SITE.toml` and "
        "approve it with `fedneuro site approve STUDY --config SITE.toml --key SIGNING.key`"
    )
    # Say what changed since an earlier decision on this study, if any.
    changes = []
    folder = approvals_dir(state_dir)
    for other in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            old = Approval.model_validate_json(other.read_bytes())
        except (OSError, ValidationError):
            continue
        if old.study_id != study.study.id:
            continue
        what = []
        if old.study_digest != study.digest():
            what.append("the study's settings changed")
        if old.code_identity != code:
            what.append(
                f"the code changed (fedneuro {old.code_identity.package_version} {old.code_identity.code_sha256[:12]}… "
                f"→ {code.package_version} {code.code_sha256[:12]}…)"
            )
        done = "approved" if old.decision == "approve" else "rejected"
        changes.append(f"plan {old.plan_hash[:16]}… ({done} {old.signed_at}): {' and '.join(what) or 'differs'}")
    if changes:
        message += "; earlier decisions on this study: " + "; ".join(changes)
    return message
