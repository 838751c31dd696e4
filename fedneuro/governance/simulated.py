"""Governance for a simulated consortium: `fedneuro simulate`/`demo` stand in for every party.

In a simulation one person runs the coordinator and every site, so this module does what each
party would do by hand in a deployment, with real keys, files and signatures, and records it
in the sites' audit logs: the coordinator signs the study (`fedneuro study sign`); each site
gets a signing key, imports its consents from its participants.tsv (`fedneuro consent
import`), accepts the study's purpose and the coordinator's key in its policy, reviews the run
plan against that policy and approves it (`fedneuro site approve`). The ClientApp then runs
the same checks as at a real site.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedneuro.governance.audit import AuditLog
from fedneuro.governance.consent import import_consent_file
from fedneuro.governance.duo import parse_term
from fedneuro.governance.keys import generate_signing_key, load_signing_key, public_key_pem, write_signing_key
from fedneuro.governance.plan import approve_plan, code_identity, review_plan
from fedneuro.governance.policy import SitePolicy
from fedneuro.governance.study_signature import StudySignature, sign_study
from fedneuro.study import Study


class SimulatedGovernanceError(ValueError):
    """A simulated site cannot take part (no consent columns, plan refused by its policy)."""


@dataclass(frozen=True)
class SimulatedSite:
    signing_key: Path
    policy: SitePolicy


def sign_simulated_study(study: Study, coordinator_key: Path, *, now: datetime) -> StudySignature:
    return sign_study(study, load_signing_key(coordinator_key), now)


def _key(path: Path) -> Path:
    if not path.is_file():
        write_signing_key(path, generate_signing_key())
    return path


def prepare_simulated_site(
    study: Study,
    *,
    name: str,
    bids_root: Path,
    state_dir: Path,
    coordinator_public_key: Path,
    signature: StudySignature,
    base_policy: SitePolicy,
    weights_sha256: str | None,
    now: datetime | None = None,
) -> SimulatedSite:
    """Keys, consent registry, policy and a signed approval for one simulated site."""
    now = now or datetime.now(UTC)
    signing_key = _key(state_dir / "keys" / "signing.key")
    key = load_signing_key(signing_key)
    audit = AuditLog(state_dir / f"{name}.audit.jsonl", key, actor=name)
    public = state_dir / f"{name}.pub"
    if not public.is_file():
        public.write_bytes(public_key_pem(key.public_key()))
    policy = base_policy
    if study.governance is not None:
        participants = bids_root / "participants.tsv"
        if not participants.is_file():
            raise SimulatedGovernanceError(
                f"site {name}: study {study.study.id} declares a purpose, so consents are needed, but {bids_root} "
                "has no participants.tsv to import them from (columns consent_duo, consent_date, ...)"
            )
        try:
            report = import_consent_file(state_dir, participants)
        except ValueError as error:
            raise SimulatedGovernanceError(f"site {name}: consents cannot be imported from {participants}: {error}") from None
        # Counts only: the audit log may be shown to an ethics board; participant ids stay in the registry.
        audit.append("consents-imported", {"source": "participants.tsv", "added": len(report.added),
                                           "updated": len(report.updated), "unchanged": len(report.unchanged),
                                           "without_consent": len(report.without_consent)}, now=now)
        purpose = study.governance.purpose
        term = purpose.permission + (f":{purpose.disease}" if purpose.permission == "DS" and purpose.disease else "")
        accepted = list(dict.fromkeys([*base_policy.accepted_purposes, parse_term(term)]))
        policy = base_policy.model_copy(update={"accepted_purposes": accepted})
    policy = policy.model_copy(update={"trusted_coordinator_keys": [coordinator_public_key.resolve()]})
    review = review_plan(study, policy, code_identity=code_identity(), weights_sha256=weights_sha256,
                         today=now.date(), signature=signature)
    if review.violations:
        audit.append("plan-refused", {"study_id": study.study.id, "plan_hash": review.plan.plan_hash,
                                      "violations": review.violations}, now=now)
        raise SimulatedGovernanceError(f"site {name} would not approve study {study.study.id}: " + "; ".join(review.violations))
    approval = approve_plan(state_dir, review, key=key, now=now, reason="simulated site: approved by `fedneuro simulate`")
    audit.append("plan-approved", {"study_id": study.study.id, "study_digest": study.digest(), "plan_hash": approval.plan_hash,
                                   "signer": approval.signer, "study_signer": approval.study_signer},
                 now=now)
    return SimulatedSite(signing_key=signing_key, policy=policy)
