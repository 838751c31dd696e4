"""What a site allows. The site owns this; nothing in it comes from the coordinator.

A policy lives in the ``[policy]`` table of the site's configuration or in a file of its own
(:func:`load_site_policy`). Paths in it (``trusted_coordinator_keys``) are relative to the
file that holds the policy. :func:`check_study_against_policy` lists every way a study
breaks it, in words for the site operator; ``fedneuro site review`` shows them and
``fedneuro site approve`` refuses to sign while any remain.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedneuro.governance.duo import DuoTerm, StudyPurpose

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from fedneuro.study import Study

__all__ = [
    "RANDOM_INIT",
    "AllowedBackbone",
    "SitePolicy",
    "SitePolicyError",
    "check_study_against_policy",
    "format_policy_error",
    "load_site_policy",
]

RANDOM_INIT = "random-init"  # stands for "no weights file": the backbone is initialised from the study seed
_STUDY_PURPOSES = ("GRU", "HMB", "DS", "POA")  # DUO permissions a study can declare (duo.PurposeCode)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SitePolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and every bad key."""


class AllowedBackbone(BaseModel):
    """One backbone the site agrees to run: a preset and the exact weights it starts from."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = Field(description="a preset of `fedneuro model list`")
    weights_sha256: str = Field(
        description=f"sha256 of the weights file (64 lower-case hex digits), or {RANDOM_INIT!r} for no weights file"
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from fedneuro.models.registry import get_backbone_preset  # torch-free registry

        get_backbone_preset(value)  # raises naming the known presets
        return value

    @field_validator("weights_sha256")
    @classmethod
    def _hash_or_random(cls, value: str) -> str:
        if value != RANDOM_INIT and not _SHA256.match(value):
            raise ValueError(
                f"{value!r} is neither a sha256 (64 lower-case hex digits, e.g. from `sha256sum weights.safetensors`) "
                f"nor {RANDOM_INIT!r}"
            )
        return value


class SitePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_epsilon_per_study: float = Field(
        default=10.0, gt=0, allow_inf_nan=False, description="ε this site may spend on one study, over all its rounds"
    )
    max_epsilon_lifetime: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="ε over every study at this site (same participants); None = no limit"
    )

    require_secure_aggregation: bool = Field(
        default=False,
        description="train only in rounds whose update is masked with secure aggregation "
        "(the coordinator then sees only the sum over sites)",
    )
    accepted_purposes: list[DuoTerm] = Field(
        default_factory=list,
        description="study purposes this site takes part in, as DUO permissions: GRU, HMB, POA, or DS:<disease id> "
        "(e.g. DS:MONDO:0005027); a study must declare one of them exactly. Empty = no study is accepted",
    )
    min_participants: int = Field(
        default=1, ge=1, description="this site's own floor: take part only with at least this many eligible participants"
    )
    require_dp: bool = Field(
        default=True,
        strict=True,  # a policy says true or false; 0/1/"yes" are typos, not decisions
        description="train only under participant-level DP-SGD: noise on (σ > 0) and the participant as the privacy "
        "unit (window-level DP does not protect a participant who contributes many windows)",
    )
    allowed_backbones: list[AllowedBackbone] = Field(
        default_factory=list,
        description="backbone presets and the exact weights the site agrees to start from; empty = any",
    )
    trusted_coordinator_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM files; relative paths are relative to the file holding this policy) "
        "whose signature a study must carry (STUDY.sig, from `fedneuro study sign`); empty = unsigned studies "
        "may be approved",
    )

    @field_validator("accepted_purposes")
    @classmethod
    def _purposes_only(cls, terms: list[DuoTerm]) -> list[DuoTerm]:
        for term in terms:
            if term.code not in _STUDY_PURPOSES:
                kind = "a modifier" if term.kind == "modifier" else "a consent permission"
                raise ValueError(
                    f"{str(term)!r} ({term.label}) is {kind}, not a purpose a study declares; "
                    "list GRU, HMB, POA or DS:<disease id>"
                )
        return terms

    @model_validator(mode="after")
    def _lifetime_covers_a_study(self) -> SitePolicy:
        if self.max_epsilon_lifetime is not None and self.max_epsilon_lifetime < self.max_epsilon_per_study:
            raise ValueError(
                f"max_epsilon_lifetime ({self.max_epsilon_lifetime}) is below max_epsilon_per_study "
                f"({self.max_epsilon_per_study}); lower the per-study budget or raise the lifetime one"
            )
        return self

    def with_paths_relative_to(self, folder: Path) -> SitePolicy:
        """A copy whose relative key paths are resolved against ``folder`` (the policy file's)."""
        keys = [p if p.is_absolute() else Path(folder) / p for p in self.trusted_coordinator_keys]
        return self.model_copy(update={"trusted_coordinator_keys": keys})

    def trusted_keys(self) -> list[Ed25519PublicKey]:
        """The coordinator keys, loaded; raises :class:`SitePolicyError` naming the entry."""
        from fedneuro.governance.keys import KeyFileError, load_public_key

        keys = []
        for index, path in enumerate(self.trusted_coordinator_keys):
            try:
                keys.append(load_public_key(path))
            except KeyFileError as error:
                raise SitePolicyError(
                    f"trusted_coordinator_keys[{index}]: {error}; point it at the coordinator's signing public key "
                    "(coordinator.signing.pub in the site kit)"
                ) from None
        return keys


def load_site_policy(path: Path) -> SitePolicy:
    """A policy file (TOML): every bad key named; key files resolved and loaded once to check them."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SitePolicyError(f"cannot read site policy {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise SitePolicyError(f"site policy {path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise SitePolicyError(f"site policy {path} is not valid TOML: {error}") from None
    try:
        policy = SitePolicy.model_validate(raw).with_paths_relative_to(path.parent)
    except ValidationError as error:
        raise SitePolicyError(format_policy_error(error, source=str(path))) from None
    try:
        policy.trusted_keys()
    except SitePolicyError as error:
        raise SitePolicyError(f"site policy {path}: {error}") from None
    return policy


def format_policy_error(error: ValidationError, *, source: str, prefix: str = "") -> str:
    """``source: key[index].field: message (got value)`` for every problem."""
    lines = [f"{source}: {error.error_count()} invalid policy setting(s):"]
    for item in error.errors():
        location = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"]).lstrip(".")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = ", ".join(SitePolicy.model_fields)
            message = f"unknown key (check the spelling; known keys: {known})"
        elif (item["type"] != "missing" and "input" in item and not isinstance(item["input"], dict)
              and repr(item["input"]) not in message):
            message = f"{message} (got {item['input']!r})"
        lines.append(f"  {location or '(top level)'}: {message}")
    return "\n".join(lines)


def check_study_against_policy(
    study: Study,
    policy: SitePolicy,
    *,
    weights_sha256: str | None,
    today: date | None = None,
    eligible_participants: int | None = None,
) -> list[str]:
    """Every way ``study`` breaks ``policy``, worded for the site operator; empty = allowed.

    ``weights_sha256`` is the sha256 of the weights file this site would load for the study
    (None: the study names none, random init). ``today`` also checks the study's ethics
    approval dates; ``eligible_participants`` (this site's cohort for the study) also checks
    the cohort floors. Pure: reads no file and no clock.
    """
    problems: list[str] = []
    governance = study.governance
    if governance is None:
        problems.append(
            "the study has no [governance] section: its purpose, requesting institution, ε cap and outputs are "
            "undeclared; ask the coordinator to add one (see `fedneuro study template`)"
        )
    else:
        problems += _purpose_problems(governance.purpose, policy, today)
        if governance.max_epsilon > policy.max_epsilon_per_study:
            problems.append(
                f"the study may spend up to ε = {governance.max_epsilon:g} at this site ([governance] max_epsilon), "
                f"above this site's max_epsilon_per_study = {policy.max_epsilon_per_study:g}; ask the coordinator for "
                "a lower cap (more noise, fewer rounds) or raise the site's budget"
            )
        if eligible_participants is not None and eligible_participants < governance.min_cohort:
            problems.append(
                f"this site has {eligible_participants} eligible participant(s); the study needs at least "
                f"min_cohort = {governance.min_cohort} per site"
            )
    if eligible_participants is not None and eligible_participants < policy.min_participants:
        problems.append(
            f"this site has {eligible_participants} eligible participant(s), below its policy's "
            f"min_participants = {policy.min_participants}"
        )
    if policy.require_dp:
        privacy = study.privacy
        if not privacy.noise_multiplier > 0:
            problems.append(f"[privacy] noise_multiplier is {privacy.noise_multiplier}: DP-SGD would add no noise")
        if privacy.unit != "participant":
            problems.append(
                f"[privacy] unit is {privacy.unit!r}: this site's policy requires participant-level DP (require_dp), "
                "and a participant contributes many windows; ask for unit = 'participant'"
            )
    if policy.require_secure_aggregation and not study.federation.secure_aggregation.enabled:
        problems.append(
            "this site's policy requires secure aggregation, but the study's [federation.secure_aggregation] "
            "enabled is false: the coordinator would see this site's update"
        )
    if policy.allowed_backbones:
        used = weights_sha256 or RANDOM_INIT
        if not any(a.backbone == study.model.backbone and a.weights_sha256 == used for a in policy.allowed_backbones):
            allowed = ", ".join(f"{a.backbone} ({_short(a.weights_sha256)})" for a in policy.allowed_backbones)
            problems.append(
                f"backbone {study.model.backbone} with weights {_short(used)} is not among this site's "
                f"allowed_backbones: {allowed}"
            )
    return problems


def _purpose_problems(purpose: StudyPurpose, policy: SitePolicy, today: date | None) -> list[str]:
    problems = []
    wanted = purpose.permission + (f":{purpose.disease}" if purpose.disease else "")
    if not any(_same_purpose(term, purpose) for term in policy.accepted_purposes):
        accepted = ", ".join(map(str, policy.accepted_purposes)) or "none"
        problems.append(
            f"the study's purpose {wanted} is not among this site's accepted_purposes ({accepted}); add it to the "
            "policy only if the site agrees to take part in such research"
        )
    ethics = purpose.ethics
    if today is not None and ethics is not None and not ethics.valid_from <= today <= ethics.valid_until:
        problems.append(
            f"the study's ethics approval {ethics.reference} is valid {ethics.valid_from} to {ethics.valid_until}, "
            f"not on {today}"
        )
    return problems


def _same_purpose(term: DuoTerm, purpose: StudyPurpose) -> bool:
    if term.code != purpose.permission:
        return False
    if term.code == "DS":  # disease ids compare case-insensitively (MONDO:0005027 = mondo:0005027)
        return (term.parameter or "").strip().upper() == (purpose.disease or "").strip().upper()
    return True


def _short(weights: str) -> str:
    return weights if weights == RANDOM_INIT else f"sha256 {weights[:12]}…"
