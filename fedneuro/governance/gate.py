"""The site's governance gate: everything decided before any recording is opened.

In order: the study is signed by a coordinator this site trusts; the run plan (study + code +
every DP parameter) was approved with this site's own key; the study satisfies the site's
policy; each participant's consent covers the study's purpose today; the cohort is large
enough. Flower's Control API is unauthenticated, so this check inside the site's own process
is what decides whether a submitted run may touch the site's data.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from fedneuro.data.bids import EligibleCohort
from fedneuro.governance.consent import ConsentError, ConsentSummary, consent_path, eligibility, load_registry, summarize
from fedneuro.governance.plan import Approval, check_site_approved
from fedneuro.governance.policy import check_study_against_policy
from fedneuro.governance.site import SiteConfig
from fedneuro.governance.study_signature import StudySignature, StudySignatureError, verify_study_signature
from fedneuro.study import Study

logger = logging.getLogger(__name__)


class GovernanceRefusal(PermissionError):
    """The site refuses this run: unsigned or untrusted study, policy violation, cohort too small."""


@dataclass(frozen=True)
class Admission:
    """What the gate decided for one message."""

    cohort: EligibleCohort
    approval: Approval | None
    study_signer: str | None
    consent: ConsentSummary | None


def admit(
    site: SiteConfig,
    study: Study,
    cohort: EligibleCohort,
    *,
    today: date,
    weights_sha256: str | None,
    study_signature: str | None,
) -> Admission:
    """Decide whether this site runs ``study`` and on whom; raise a refusal that says why."""
    signer = _check_signature(site, study, study_signature)
    # A site with a signing key has approval switched on: it runs only plans it signed.
    approval = check_site_approved(site, study) if site.signing_key is not None else None
    if study.governance is None:
        return Admission(cohort=cohort, approval=approval, study_signer=signer, consent=None)
    if not consent_path(site.state_dir).is_file():
        raise GovernanceRefusal(
            f"site {site.name}: study {study.study.id} declares a purpose ({study.governance.purpose.permission}) "
            f"but this site has no consent registry; import consents with `fedneuro consent import`"
        )
    try:
        registry = load_registry(site.state_dir)
    except ConsentError as error:
        raise GovernanceRefusal(f"site {site.name}: consent registry unusable: {error}") from None
    decisions = eligibility(registry, study.governance.purpose, today, participant_ids=cohort.participant_ids)
    keep = [i for i, pid in enumerate(cohort.participant_ids) if decisions[pid].eligible]
    violations = check_study_against_policy(
        study, site.policy, weights_sha256=weights_sha256, today=today, eligible_participants=len(keep)
    )
    if violations:
        raise GovernanceRefusal(f"site {site.name}: study {study.study.id} violates this site's policy: " + "; ".join(violations))
    floor = max(study.governance.min_cohort, site.policy.min_participants)
    if len(keep) < floor:
        raise GovernanceRefusal(
            f"site {site.name}: {len(keep)} participants' consent covers study {study.study.id} today, "
            f"below the minimum cohort of {floor} (study min_cohort {study.governance.min_cohort}, "
            f"site min_participants {site.policy.min_participants})"
        )
    excluded = dict(cohort.excluded)
    for pid in cohort.participant_ids:
        if not decisions[pid].eligible:
            excluded[pid] = "consent: " + "; ".join(decisions[pid].reasons)
    filtered = replace(
        cohort,
        participant_ids=tuple(cohort.participant_ids[i] for i in keep),
        labels=tuple(cohort.labels[i] for i in keep),
        excluded=excluded,
    )
    return Admission(cohort=filtered, approval=approval, study_signer=signer, consent=summarize(decisions))


def _check_signature(site: SiteConfig, study: Study, signature_json: str | None) -> str | None:
    trusted = site.policy.trusted_keys()
    if not trusted:
        return None
    if not signature_json:
        raise GovernanceRefusal(
            f"site {site.name}: study {study.study.id} arrived unsigned, but this site only runs studies signed by "
            f"a trusted coordinator key (policy trusted_coordinator_keys); sign it with `fedneuro study sign`"
        )
    try:
        signature = StudySignature.model_validate_json(signature_json)
        return verify_study_signature(study, signature, trusted)
    except (StudySignatureError, ValueError) as error:
        raise GovernanceRefusal(f"site {site.name}: study {study.study.id} signature refused: {error}") from None


def salted_set_hash(participant_ids: list[str] | tuple[str, ...], *, salt: bytes) -> str:
    """A hash of the participant set used, for the audit log: equal sets give equal hashes at
    this site, but without the site's salt nobody can test whether a given id was in it."""
    digest = hashlib.sha256(salt)
    for pid in sorted(participant_ids):
        digest.update(pid.encode("utf-8") + b"\x1f")
    return digest.hexdigest()


def audit_salt(state_dir: Path) -> bytes:
    """The site's secret salt for participant-set hashes (created once, 0600)."""
    import secrets

    from fedneuro.atomic import write_bytes_atomic

    path = state_dir / "audit-salt.key"
    if not path.is_file():
        write_bytes_atomic(path, secrets.token_bytes(32), mode=0o600)
    return path.read_bytes()
