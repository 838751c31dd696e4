"""`fedneuro site review|approve|reject`: a site operator's signed decision on a run plan.

Registered under the ``site`` group by ``fedneuro/cli/main.py``. The ClientApp runs only
plans approved here (``fedneuro.governance.plan.check_site_approved``).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedneuro.cli.common import JSON_OPTION, console, day_or_today, fail, out_console, print_json, user_errors

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedneuro.governance.plan import Approval, PlanReview, RunPlan
    from fedneuro.governance.site import SiteConfig
    from fedneuro.study import Study

STUDY_ARGUMENT = typer.Argument(..., help="the study file (TOML); its signature is read from STUDY.sig beside it")
CONFIG_OPTION = typer.Option(..., "--config", help="the site's configuration (TOML): name, state_dir, [policy], signing_key")
PARTICIPANTS_OPTION = typer.Option(
    None, "--participants", min=1,
    help="eligible participants at this site for the study: shows sampling rate and steps per round, checks cohort floors",
)
SIGNATURE_OPTION = typer.Option(None, "--signature", help="the coordinator's study signature (default: STUDY.sig)")
DATE_OPTION = typer.Option(None, "--date", help="check the ethics approval on this date, YYYY-MM-DD (default: today)")
_DONE = {"approve": "approved", "reject": "rejected"}
KEY_OPTION = typer.Option(None, "--key", help="the site's Ed25519 signing key (default: signing_key of the site config)")


def review(
    study_path: Path = STUDY_ARGUMENT,
    config: Path = CONFIG_OPTION,
    participants: int | None = PARTICIPANTS_OPTION,
    signature: Path | None = SIGNATURE_OPTION,
    on: str | None = DATE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Show a study's run plan as this site would run it, with every policy violation and the plan hash.

    Exit code 0: the plan may be approved; 1: it breaks the site's policy; 2: a file cannot be used.
    """
    from fedneuro.governance.plan import read_decision

    site, _study, result = _review(study_path, config, participants, signature, day_or_today(on))
    decision = read_decision(site.state_dir, result.plan.plan_hash)
    if json_output:
        print_json({"site": site.name, "study_file": str(study_path), "approvable": result.approvable,
                    **result.model_dump(mode="json"),
                    "recorded_decision": decision.model_dump(mode="json") if decision else None})
    else:
        _show(site, result, decision)
    if not result.approvable:
        raise typer.Exit(1)


def approve(
    study_path: Path = STUDY_ARGUMENT,
    config: Path = CONFIG_OPTION,
    key_path: Path | None = KEY_OPTION,
    reason: str = typer.Option("", "--reason", help="a note kept with the approval (e.g. the committee's decision)"),
    participants: int | None = PARTICIPANTS_OPTION,
    signature: Path | None = SIGNATURE_OPTION,
    on: str | None = DATE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Sign this site's approval of the study's run plan; refused while the plan breaks the site's policy."""
    from fedneuro.governance.plan import PlanPolicyError, approve_plan

    site, _study, result = _review(study_path, config, participants, signature, day_or_today(on))
    key = _site_key(site, key_path, config)
    if result.violations and json_output:
        print_json({"site": site.name, "decision": None, "plan_hash": result.plan.plan_hash,
                    "violations": result.violations})
    now = datetime.now(timezone.utc)
    try:
        approval = approve_plan(site.state_dir, result, key=key, now=now, reason=reason)
    except (PlanPolicyError, OSError) as error:
        _audit_decision(site, key, "plan-refused", result, now, reason=str(error))
        fail(str(error))
    _audit_decision(site, key, "plan-approved", result, now, reason=reason)
    _report(site, approval, json_output)


def reject(
    study_path: Path = STUDY_ARGUMENT,
    config: Path = CONFIG_OPTION,
    reason: str = typer.Option(..., "--reason", help="why, for the coordinator (e.g. 'ε cap above our budget')"),
    key_path: Path | None = KEY_OPTION,
    participants: int | None = PARTICIPANTS_OPTION,
    signature: Path | None = SIGNATURE_OPTION,
    on: str | None = DATE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Sign this site's rejection of the study's run plan (it replaces an earlier approval)."""
    from fedneuro.governance.plan import reject_plan

    site, _study, result = _review(study_path, config, participants, signature, day_or_today(on))
    key = _site_key(site, key_path, config)
    now = datetime.now(timezone.utc)
    with user_errors(ValueError, OSError):
        approval = reject_plan(site.state_dir, result, key=key, now=now, reason=reason)
    _audit_decision(site, key, "plan-rejected", result, now, reason=reason)
    _report(site, approval, json_output)


def _audit_decision(site: SiteConfig, key, event: str, review: PlanReview, now: datetime, *, reason: str) -> None:  # type: ignore[no-untyped-def]
    """The decision goes into the site's signed audit log, beside the log's public key."""
    from fedneuro.atomic import write_bytes_atomic
    from fedneuro.governance.audit import AuditLog, AuditLogError
    from fedneuro.governance.keys import public_key_pem

    public = site.state_dir / f"{site.name}.pub"
    try:
        if not public.is_file():
            write_bytes_atomic(public, public_key_pem(key.public_key()))
        AuditLog(site.state_dir / f"{site.name}.audit.jsonl", key, actor=site.name).append(event, {
            "study_id": review.plan.study_id,
            "plan_hash": review.plan.plan_hash, "violations": review.violations, "reason": reason,
            "study_signer": review.study_signer}, now=now)
    except (AuditLogError, OSError) as error:
        fail(f"the decision was made but could not be written to the site's audit log: {error}")


def _review(
    study_path: Path, config: Path, participants: int | None, signature_path: Path | None, today: date
) -> tuple[SiteConfig, Study, PlanReview]:
    from fedneuro.federation.launch import LaunchError, load_site_config
    from fedneuro.governance.plan import code_identity, review_plan
    from fedneuro.governance.policy import SitePolicyError
    from fedneuro.governance.study_signature import StudySignatureError, read_study_signature, signature_path_for
    from fedneuro.study import StudyFileError, load_study

    with user_errors(LaunchError, StudyFileError):
        site = load_site_config(config)
        study = load_study(study_path)
    # The [policy] table's relative key paths are relative to the site config that holds it.
    policy = site.policy.with_paths_relative_to(config.parent)
    signature_file = signature_path or signature_path_for(study_path)
    signature = None
    if signature_path is not None or signature_file.exists():
        with user_errors(StudySignatureError):
            signature = read_study_signature(signature_file)
    with user_errors(SitePolicyError, ModuleNotFoundError):
        result = review_plan(study, policy, code_identity=code_identity(), weights_sha256=_weights_sha256(study),
                             today=today, signature=signature, eligible_participants=participants)
    if result.plan.sample_rate is not None:
        result.notes.insert(0, _planned_epsilon(result))
    return site, study, result


def _planned_epsilon(result: PlanReview) -> str:
    """The ε the whole study would cost this site (an estimate: the budget gate decides each round)."""
    from fedneuro.privacy.accountant import epsilon_from_history, resolve_delta  # imports opacus

    plan = result.plan
    assert plan.sample_rate is not None and plan.steps_per_round is not None and plan.training_participants
    try:
        delta = resolve_delta(plan.privacy.delta, plan.training_participants)
    except ValueError as error:
        return f"planned ε not computed: {error}"
    epsilon = epsilon_from_history([(plan.privacy.noise_multiplier, plan.sample_rate, plan.steps_per_round * plan.rounds)],
                                   delta=delta, accountant=plan.privacy.accountant)
    cap = plan.governance.max_epsilon if plan.governance else None
    over = f"; above the study's own cap {cap:g}" if cap and epsilon > cap else ""
    return (f"planned ε at this site ≈ {epsilon:.2f} (δ = {delta:g}) after all {plan.rounds} rounds, "
            f"if this site's ledger holds nothing else for the study{over}")


def _weights_sha256(study: Study) -> str | None:
    """sha256 of the weights file this site would load for the study; None for random init."""
    if study.model.weights is None:
        return None
    from fedneuro.models.weights import WeightsError, file_sha256, resolve_weights_file  # imports torch

    with user_errors(WeightsError):
        path = resolve_weights_file(study.model.weights)
    if not path.is_file():
        fail(f"[model] weights {path} is not a file here: this site needs the same weights file to review and run "
             "the study; copy it to this path or ask the coordinator for a study naming where it is")
    return file_sha256(path)


def _site_key(site: SiteConfig, key_path: Path | None, config: Path) -> Ed25519PrivateKey:
    from fedneuro.governance.keys import KeyFileError, fingerprint, load_signing_key

    path = key_path or site.signing_key
    if path is None:
        fail(f"no signing key: pass --key (the site kit's signing.key) or set signing_key in {config}")
    with user_errors(KeyFileError):
        key = load_signing_key(path)
        own = load_signing_key(site.signing_key) if site.signing_key is not None and key_path is not None else None
    if own is not None and fingerprint(own) != fingerprint(key):
        fail(f"--key {key_path} ({fingerprint(key)}) is not this site's signing_key {site.signing_key} "
             f"({fingerprint(own)}): the site would not accept a decision signed with it")
    return key


def _report(site: SiteConfig, approval: Approval, json_output: bool) -> None:
    from fedneuro.governance.plan import approval_path

    path = approval_path(site.state_dir, approval.plan_hash)
    if json_output:
        print_json({"site": site.name, "file": str(path), **approval.model_dump(mode="json")})
        return
    out_console.print(f"site {site.name} {_DONE[approval.decision]} plan {approval.plan_hash} of study {approval.study_id} "
                      f"(signed by {approval.signer}); decision in {path}", highlight=False, markup=False)


def _show(site: SiteConfig, result: PlanReview, decision: Approval | None) -> None:
    plan = result.plan
    rows: list[tuple[str, str]] = [("study", f"{plan.study_id}: {plan.title or '(no title)'} ({plan.modality})")]
    governance = plan.governance
    if governance is None:
        rows.append(("purpose", "undeclared (no [governance] section)"))
    else:
        purpose = governance.purpose
        what = purpose.permission + (f" on {purpose.disease}" if purpose.disease else "")
        flags = ["commercial" if purpose.commercial else "non-commercial"]
        flags += ["not-for-profit"] if purpose.not_for_profit else []
        rows += [("purpose", f"{what}, {', '.join(flags)}"),
                 ("requested by", governance.requesting_institution
                  + (f" (data used at {purpose.institution})" if purpose.institution else "")),
                 ("ethics", f"{purpose.ethics.reference}, valid {purpose.ethics.valid_from} to {purpose.ethics.valid_until}"
                  if purpose.ethics else "none declared")]
    adapter = plan.adapter
    rows += [
        ("backbone", f"{plan.backbone}, weights {plan.weights_sha256}" + (f" ({plan.weights_file})" if plan.weights_file else "")),
        ("adapter", f"{adapter.kind}" + (f", rank {adapter.rank}, alpha {adapter.alpha:g}, dropout {adapter.dropout:g}"
                                         if adapter.kind == "lora+head" else "")),
        ("DP", _dp_line(plan)),
        ("sampling", _sampling_line(plan)),
        ("training", f"{plan.local_epochs} local epoch(s) per round, {plan.optimizer}, learning rate {plan.learning_rate:g}"),
        ("rounds", f"{plan.rounds} ({plan.strategy})"),
        ("max ε", f"{governance.max_epsilon:g} at any one site over all rounds (the study's cap); this site's "
                  f"budget per study {site.policy.max_epsilon_per_study:g}" if governance else "undeclared"),
        ("secure agg.", ("on" if plan.secure_aggregation else "off")
         + (f", updates clipped to L2 norm {plan.max_update_norm:g}" if plan.max_update_norm else "")),
        ("outputs", "; ".join(f"{name}: {what}" for name, what in plan.outputs.items()) or "undeclared"),
        ("cohort", f"at least {governance.min_cohort} eligible participants per site, metrics over at least "
                   f"{governance.min_participants_per_metric}" if governance else "undeclared"),
        ("code", f"fedneuro {plan.code_identity.package_version}, source sha256 {plan.code_identity.code_sha256}"),
        ("study signed", f"by {result.study_signer} (trusted)" if result.study_signer else "not verified"),
        ("decision", f"{_DONE[decision.decision]} {decision.signed_at} by {decision.signer} (not verified here)"
         if decision else "none recorded"),
    ]
    out_console.print(f"Run plan of study {plan.study_id} at site {site.name}", highlight=False, markup=False)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out_console.print(f"  {name:<{width}}  {value}", highlight=False, markup=False)
    if result.violations:
        out_console.print(f"Policy: {len(result.violations)} violation(s); approval is refused until they are resolved:",
                          highlight=False, markup=False)
        for violation in result.violations:
            out_console.print(f"  - {violation}", highlight=False, markup=False)
    else:
        out_console.print("Policy: the plan meets this site's policy", highlight=False, markup=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    out_console.print(f"plan hash: {plan.plan_hash}", highlight=False, markup=False)


def _dp_line(plan: RunPlan) -> str:
    privacy = plan.privacy
    per_unit = (f"at most {privacy.max_windows_per_participant} windows per participant averaged, then "
                if privacy.unit == "participant" else "")
    delta = f"{privacy.delta:g}" if privacy.delta is not None else "min(1e-5, 1/(10 × participants))"
    return (f"{privacy.unit}-level; {per_unit}clipped to C = {privacy.max_grad_norm:g}, noise σ = "
            f"{privacy.noise_multiplier:g}; δ = {delta}; accountant {privacy.accountant}")


def _sampling_line(plan: RunPlan) -> str:
    unit = "participants" if plan.privacy.unit == "participant" else "windows"
    line = f"Poisson, {plan.batch_size} expected {unit} per step"
    if plan.sample_rate is not None:
        line += (f"; with {plan.eligible_participants} eligible participants (about {plan.training_participants} "
                 f"training) q ≈ {plan.sample_rate:.3g}, about {plan.steps_per_round} DP steps per round")
    else:
        line += f"; steps per round = {plan.local_epochs} × round(N / {plan.batch_size}) for N eligible participants"
    return line


