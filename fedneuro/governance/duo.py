"""GA4GH Data Use Ontology (DUO) terms, what a study declares, and whether a consent covers it.

A consent lists DUO terms: one or more *permissions* (what research it allows) and any
*modifiers* (conditions on that use). A study declares its :class:`StudyPurpose`;
:func:`consent_covers` says why a consent does not allow it. Only what a machine can decide
is decided here: a modifier that needs a person's judgement (user-specific, collaboration,
…) makes the consent *not* cover the study until the site reviews it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

__all__ = [
    "DUO_TERMS",
    "DuoTerm",
    "DuoTermError",
    "EthicsApproval",
    "StudyPurpose",
    "TermInfo",
    "consent_covers",
    "consent_notes",
    "coverage_problems",
    "parse_term",
    "parse_terms",
]

Kind = Literal["permission", "modifier"]
Parameter = Literal["disease", "region", "date", "project", "institution", "user", "text"]
PurposeCode = Literal["GRU", "HMB", "DS", "POA"]
MANUAL_REVIEW = "needs manual review by the site"


class DuoTermError(ValueError):
    """A consent term that is not a known DUO term, or lacks / has a bad parameter."""


@dataclass(frozen=True)
class TermInfo:
    code: str
    duo_id: str
    label: str
    kind: Kind
    parameter: Parameter | None = None  # what the term's parameter is, if it takes one
    parameter_required: bool = True


# Ids and labels as in the DUO release (purl.obolibrary.org/obo/duo.owl); codes are DUO's
# shorthands, NPUNCU being the combined not-for-profit + non-commercial term.
_TERMS = (
    TermInfo("NRES", "DUO:0000004", "no restriction", "permission"),
    TermInfo("GRU", "DUO:0000042", "general research use", "permission"),
    TermInfo("HMB", "DUO:0000006", "health or medical or biomedical research", "permission"),
    TermInfo("DS", "DUO:0000007", "disease specific research", "permission", "disease"),
    TermInfo("POA", "DUO:0000011", "population origins or ancestry research only", "permission"),
    TermInfo("NCU", "DUO:0000046", "non-commercial use only", "modifier"),
    TermInfo("NPU", "DUO:0000045", "not for profit organisation use only", "modifier"),
    TermInfo("NPUNCU", "DUO:0000018", "not for profit, non commercial use only", "modifier"),
    TermInfo("IRB", "DUO:0000021", "ethics approval required", "modifier"),
    TermInfo("PUB", "DUO:0000019", "publication required", "modifier"),
    TermInfo("COL", "DUO:0000020", "collaboration required", "modifier", "text", parameter_required=False),
    TermInfo("GS", "DUO:0000022", "geographical restriction", "modifier", "region"),
    TermInfo("MOR", "DUO:0000024", "publication moratorium", "modifier", "date"),
    TermInfo("TS", "DUO:0000025", "time limit on use", "modifier", "date"),
    TermInfo("US", "DUO:0000026", "user specific restriction", "modifier", "user", parameter_required=False),
    TermInfo("PS", "DUO:0000027", "project specific restriction", "modifier", "project"),
    TermInfo("IS", "DUO:0000028", "institution specific restriction", "modifier", "institution"),
    TermInfo("RS", "DUO:0000012", "research specific restrictions", "modifier", "text", parameter_required=False),
    TermInfo("GSO", "DUO:0000016", "genetic studies only", "modifier"),
    TermInfo("NMDS", "DUO:0000015", "no general methods research", "modifier"),
    TermInfo("RTN", "DUO:0000029", "return to database or resource", "modifier"),
    TermInfo("NPOA", "DUO:0000044", "population origins or ancestry research prohibited", "modifier"),
    TermInfo("CC", "DUO:0000043", "clinical care use", "modifier"),
)
DUO_TERMS: dict[str, TermInfo] = {t.code: t for t in _TERMS}
_BY_ID = {t.duo_id: t for t in _TERMS}

_EXAMPLES: dict[Parameter, str] = {
    "disease": "a disease id such as MONDO:0005027 (epilepsy)",
    "region": "a country or region code such as DE or EU",
    "date": "a date written YYYY-MM-DD",
    "project": "a project or study id",
    "institution": "an institution name",
    "user": "a user or group name",
    "text": "free text",
}
_SAMPLE_VALUE: dict[Parameter, str] = {
    "disease": "MONDO:0005027", "region": "DE", "date": "2027-12-31", "project": "eeg-abnormal",
    "institution": "Charite", "user": "team-a", "text": "...",
}
_CURIE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9._-]+$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class DuoTerm(BaseModel):
    """One term of a consent: a code and, for terms that take one, its parameter.

    Reads and writes as its text form (``HMB``, ``DS:MONDO:0005027``, ``TS:2027-12-31``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    parameter: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            term = parse_term(value)
            return {"code": term.code, "parameter": term.parameter}
        return value

    @model_validator(mode="after")
    def _known(self) -> DuoTerm:
        _check(self.code, self.parameter, shown=str(self))
        return self

    @model_serializer
    def _as_text(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return self.code if self.parameter is None else f"{self.code}:{self.parameter}"

    @property
    def info(self) -> TermInfo:
        return DUO_TERMS[self.code]

    @property
    def duo_id(self) -> str:
        return self.info.duo_id

    @property
    def label(self) -> str:
        return self.info.label

    @property
    def kind(self) -> Kind:
        return self.info.kind

    @property
    def date_value(self) -> date:
        """The parameter of a date term (MOR, TS)."""
        assert self.parameter is not None and self.info.parameter == "date"
        return date.fromisoformat(self.parameter)


def parse_term(text: str) -> DuoTerm:
    """``HMB``, ``DUO:0000006``, ``DS:MONDO:0005027``, ``DUO:0000007:MONDO:0005027``, ``IS:Charite``."""
    raw = text.strip()
    if raw.upper().startswith("DUO:"):
        head, _, rest = raw[4:].partition(":")
        info = _BY_ID.get(f"DUO:{head}")
        if info is None:
            raise DuoTermError(
                f"unknown DUO term {text!r}: no DUO id {raw.split(':')[0]}:{head} among the known ones "
                f"({', '.join(f'{t.duo_id} {t.code}' for t in _TERMS)})"
            )
        code, parameter = info.code, rest
    else:
        code, _, parameter = raw.partition(":")
    term = DuoTerm.model_construct(code=code, parameter=parameter.strip() or None)
    _check(term.code, term.parameter, shown=text)
    return term


def parse_terms(text: str, *, separator: str = ";") -> list[DuoTerm]:
    """Terms separated by ``;`` (blank items ignored); raises on the first bad term."""
    return [parse_term(item) for item in text.split(separator) if item.strip()]


def _check(code: str, parameter: str | None, *, shown: str) -> None:
    info = DUO_TERMS.get(code)
    if info is None:
        hint = f" (codes are upper case: did you mean {code.upper()!r}?)" if code.upper() in DUO_TERMS else ""
        raise DuoTermError(
            f"unknown DUO term {shown!r}{hint}; known codes: {', '.join(DUO_TERMS)} "
            "(or their DUO ids, e.g. DUO:0000006)"
        )
    if info.parameter is None:
        if parameter is not None:
            raise DuoTermError(f"DUO term {shown!r}: {code} ({info.label}) takes no parameter; write just {code}")
        return
    example = f"{code}:{_SAMPLE_VALUE[info.parameter]}"
    if parameter is None:
        if info.parameter_required:
            raise DuoTermError(
                f"DUO term {shown!r}: {code} ({info.label}) needs {_EXAMPLES[info.parameter]}; "
                f"write it as {example}"
            )
        return
    if info.parameter == "disease" and not _CURIE.match(parameter):
        raise DuoTermError(
            f"DUO term {shown!r}: {parameter!r} is not a disease id; use {_EXAMPLES['disease']}, "
            f"e.g. {example}"
        )
    if info.parameter == "date":
        try:
            if not _ISO_DATE.match(parameter):
                raise ValueError
            date.fromisoformat(parameter)
        except ValueError:
            raise DuoTermError(
                f"DUO term {shown!r}: {parameter!r} is not a date; write it as YYYY-MM-DD, e.g. {example}"
            ) from None


class EthicsApproval(BaseModel):
    """The study's ethics (IRB) approval, as the site's committee recorded it."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=1, description="the committee's reference, e.g. EA1/123/24")
    valid_from: date
    valid_until: date

    @model_validator(mode="after")
    def _ordered(self) -> EthicsApproval:
        if self.valid_until < self.valid_from:
            raise ValueError(
                f"valid_until ({self.valid_until}) is before valid_from ({self.valid_from}); "
                "swap them or correct the approval's dates"
            )
        return self


class StudyPurpose(BaseModel):
    """What a study declares about its use of the data, to be matched against consents."""

    model_config = ConfigDict(extra="forbid")

    permission: PurposeCode = Field(description="the study's research category: GRU, HMB, DS or POA")
    disease: str | None = Field(default=None, description="disease id (e.g. MONDO:0005027); required for DS")
    commercial: bool = False
    not_for_profit: bool = Field(default=False, description="the study is run by a not-for-profit organisation")
    institution: str | None = None
    country: str | None = Field(default=None, description="where the data is used: ISO 3166 code, e.g. DE")
    project: str | None = Field(default=None, description="project or study id")
    ethics: EthicsApproval | None = None

    @model_validator(mode="after")
    def _disease_only_for_ds(self) -> StudyPurpose:
        if self.permission == "DS" and not self.disease:
            raise ValueError("permission DS (disease specific research) needs a disease id, e.g. disease = 'MONDO:0005027'")
        if self.permission != "DS" and self.disease:
            raise ValueError(f"disease {self.disease!r} is set, but permission is {self.permission}; use permission DS")
        if self.disease and not _CURIE.match(self.disease):
            raise ValueError(f"disease {self.disease!r} is not a disease id; use e.g. MONDO:0005027")
        return self


# The permission that grants a purpose: which study categories each consent permission allows.
_PERMITS: dict[str, frozenset[str]] = {
    "NRES": frozenset({"GRU", "HMB", "DS", "POA"}),
    "GRU": frozenset({"GRU", "HMB", "DS", "POA"}),
    "HMB": frozenset({"HMB", "DS"}),
    "DS": frozenset({"DS"}),
    "POA": frozenset({"POA"}),
}
_MANUAL = frozenset({"US", "COL", "RS", "GSO", "NMDS", "RTN"})
_EU = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)
_REGIONS = {"EU": _EU, "EEA": _EU | {"IS", "LI", "NO"}}


def coverage_problems(terms: Sequence[DuoTerm], purpose: StudyPurpose, today: date) -> list[tuple[str, str]]:
    """``(kind, message)`` for every reason the consent does not cover the purpose.

    ``kind`` is a stable key for counting (``permission``, a modifier code, ``manual review``).
    """
    problems: list[tuple[str, str]] = []
    permissions = [t for t in terms if t.kind == "permission"]
    if not permissions:
        problems.append(("permission", "the consent names no permission (NRES, GRU, HMB, DS or POA)"))
    elif not any(_permission_covers(t, purpose) for t in permissions):
        wanted = purpose.permission + (f":{purpose.disease}" if purpose.disease else "")
        allowed = "; ".join(_permission_scope(t) for t in permissions)
        problems.append(("permission", f"the consent allows {allowed}, not this study's {wanted}"))
    for term in terms:
        if term.kind == "modifier":
            message = _modifier_problem(term, purpose, today)
            if message is not None:
                problems.append(("manual review" if term.code in _MANUAL else term.code, message))
    return problems


def consent_covers(consent_terms: Sequence[DuoTerm], purpose: StudyPurpose, today: date) -> list[str]:
    """Why the consent does NOT cover the study's purpose on ``today``; empty = covered."""
    return [message for _, message in coverage_problems(consent_terms, purpose, today)]


def consent_notes(consent_terms: Sequence[DuoTerm]) -> list[str]:
    """Obligations that do not block training but bind the study's publications."""
    notes = []
    for term in consent_terms:
        if term.code == "PUB":
            notes.append("PUB: results must be made public (publication required)")
        elif term.code == "MOR":
            notes.append(f"MOR: no publication before {term.parameter} (publication moratorium)")
    return notes


def _permission_covers(term: DuoTerm, purpose: StudyPurpose) -> bool:
    if purpose.permission not in _PERMITS[term.code]:
        return False
    if term.code == "DS":
        return _same_id(term.parameter, purpose.disease)
    return True


def _permission_scope(term: DuoTerm) -> str:
    if term.code == "DS":
        return f"DS ({term.label}) on {term.parameter} only"
    return f"{term.code} ({term.label}), which covers {', '.join(sorted(_PERMITS[term.code]))}"


def _modifier_problem(term: DuoTerm, purpose: StudyPurpose, today: date) -> str | None:
    code, what = term.code, f"{term.code} ({term.label})"
    if code == "NCU" and purpose.commercial:
        return f"{what}: the study is commercial"
    if code in {"NPU", "NPUNCU"} and not purpose.not_for_profit:
        return f"{what}: the study is not declared as run by a not-for-profit organisation"
    if code == "NPUNCU" and purpose.commercial:
        return f"{what}: the study is commercial"
    if code == "NPOA" and purpose.permission == "POA":
        return f"{what}: the study is population origins or ancestry research"
    if code == "IRB":
        approval = purpose.ethics
        if approval is None:
            return f"{what}: the study declares no ethics approval"
        if not approval.valid_from <= today <= approval.valid_until:
            return (
                f"{what}: the study's approval {approval.reference} is valid {approval.valid_from} to "
                f"{approval.valid_until}, not on {today}"
            )
    if code == "TS" and today > term.date_value:
        return f"{what}: use was allowed until {term.parameter} only (today is {today})"
    if code == "IS" and not _same_text(term.parameter, purpose.institution):
        return f"{what}: limited to {term.parameter}, the study declares {purpose.institution or 'no institution'}"
    if code == "PS" and not _same_text(term.parameter, purpose.project):
        return f"{what}: limited to project {term.parameter}, the study declares {purpose.project or 'no project'}"
    if code == "GS" and not _in_region(purpose.country, term.parameter or ""):
        return f"{what}: limited to {term.parameter}, the study declares {purpose.country or 'no country'}"
    if code in _MANUAL:
        shown = f" ({term.parameter})" if term.parameter else ""
        return f"{what}{shown}: {MANUAL_REVIEW}"
    return None  # PUB, MOR, CC: no effect on whether training may use the data


def _same_id(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().upper() == b.strip().upper()


def _same_text(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def _in_region(country: str | None, region: str) -> bool:
    if country is None:
        return False
    country, region = country.strip().upper(), region.strip().upper()
    return country == region or country in _REGIONS.get(region, frozenset())
