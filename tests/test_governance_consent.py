"""Consent as a site keeps it: DUO terms, the registry, eligibility, withdrawal and its impact."""

from __future__ import annotations

import csv
import json
import re
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedneuro.cli.main import app
from fedneuro.governance.consent import (
    ConsentError,
    ConsentFileError,
    ConsentImportError,
    consent_path,
    eligibility,
    import_consent_file,
    load_registry,
    read_consent_source,
    summarize,
    withdraw_participant,
)
from fedneuro.governance.contributions import (
    ContributionError,
    contributions_path,
    impact,
    read_contributions,
    record_contribution,
)
from fedneuro.governance.duo import (
    DUO_TERMS,
    MANUAL_REVIEW,
    DuoTermError,
    EthicsApproval,
    StudyPurpose,
    consent_covers,
    consent_notes,
    parse_term,
    parse_terms,
)

runner = CliRunner()
TODAY = date(2025, 6, 1)
HEADER = "participant_id\tage\tconsent_duo\tconsent_date\tconsent_expiry\tconsent_withdrawn"


def _tsv(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- DUO terms
@pytest.mark.parametrize(
    ("text", "code", "parameter", "duo_id"),
    [
        ("HMB", "HMB", None, "DUO:0000006"),
        ("DUO:0000042", "GRU", None, "DUO:0000042"),
        ("DS:MONDO:0005027", "DS", "MONDO:0005027", "DUO:0000007"),
        ("DUO:0000007:MONDO:0005027", "DS", "MONDO:0005027", "DUO:0000007"),
        ("TS:2027-12-31", "TS", "2027-12-31", "DUO:0000025"),
        ("IS:Charite", "IS", "Charite", "DUO:0000028"),
        (" NCU ", "NCU", None, "DUO:0000046"),
        ("IRB", "IRB", None, "DUO:0000021"),
        ("COL", "COL", None, "DUO:0000020"),
    ],
)
def test_terms_parse_from_code_id_and_parameter(text: str, code: str, parameter: str | None, duo_id: str) -> None:
    term = parse_term(text)
    assert (term.code, term.parameter, term.duo_id) == (code, parameter, duo_id)
    assert parse_term(str(term)) == term


def test_registry_has_the_permissions_and_modifiers_with_distinct_ids() -> None:
    assert {c for c, t in DUO_TERMS.items() if t.kind == "permission"} == {"NRES", "GRU", "HMB", "DS", "POA"}
    assert {"NCU", "NPU", "IRB", "PUB", "COL", "GS", "MOR", "TS", "US", "PS", "IS", "RS", "GSO", "NMDS"} <= set(DUO_TERMS)
    assert len({t.duo_id for t in DUO_TERMS.values()}) == len(DUO_TERMS)
    assert [str(t) for t in parse_terms("HMB; NCU;;TS:2027-01-01")] == ["HMB", "NCU", "TS:2027-01-01"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HMX", r"unknown DUO term 'HMX'; known codes: NRES, GRU, HMB"),
        ("hmb", r"did you mean 'HMB'\?"),
        ("DUO:0000099", r"no DUO id DUO:0000099"),
        ("DS", r"DS \(disease specific research\) needs a disease id .* write it as DS:MONDO:0005027"),
        ("TS", r"TS \(time limit on use\) needs a date written YYYY-MM-DD"),
        ("IS", r"needs an institution name; write it as IS:Charite"),
        ("TS:31.12.2027", r"'31.12.2027' is not a date; write it as YYYY-MM-DD"),
        ("DS:epilepsy", r"'epilepsy' is not a disease id"),
        ("NCU:yes", r"NCU \(non-commercial use only\) takes no parameter; write just NCU"),
    ],
)
def test_bad_terms_are_named_with_the_fix(text: str, message: str) -> None:
    with pytest.raises(DuoTermError, match=message):
        parse_term(text)


# --------------------------------------------------------------------------- coverage
APPROVAL = EthicsApproval(reference="EA1/001/25", valid_from=date(2025, 1, 1), valid_until=date(2025, 12, 31))


@pytest.mark.parametrize(
    ("terms", "purpose", "reason"),
    [
        ("GRU", {"permission": "HMB"}, None),
        ("NRES", {"permission": "POA"}, None),
        ("GRU", {"permission": "DS", "disease": "MONDO:0005027"}, None),
        ("HMB", {"permission": "HMB"}, None),
        ("HMB", {"permission": "DS", "disease": "MONDO:0005027"}, None),
        ("HMB", {"permission": "GRU"}, r"allows HMB .* not this study's GRU"),
        ("HMB", {"permission": "POA"}, r"not this study's POA"),
        ("DS:MONDO:0005027", {"permission": "DS", "disease": "mondo:0005027"}, None),
        ("DS:MONDO:0005027", {"permission": "DS", "disease": "MONDO:0005180"}, r"on MONDO:0005027 only, not this study's DS:MONDO:0005180"),
        ("DS:MONDO:0005027", {"permission": "HMB"}, r"not this study's HMB"),
        ("POA", {"permission": "POA"}, None),
        ("POA", {"permission": "HMB"}, r"not this study's HMB"),
        ("HMB;DS:MONDO:0005027", {"permission": "HMB"}, None),
        ("NCU", {"permission": "HMB"}, r"names no permission"),
        ("HMB;NCU", {"permission": "HMB"}, None),
        ("HMB;NCU", {"permission": "HMB", "commercial": True}, r"NCU \(non-commercial use only\): the study is commercial"),
        ("HMB;NPU", {"permission": "HMB"}, r"NPU .*not declared as run by a not-for-profit"),
        ("HMB;NPU", {"permission": "HMB", "not_for_profit": True}, None),
        ("HMB;IRB", {"permission": "HMB"}, r"IRB \(ethics approval required\): the study declares no ethics approval"),
        ("HMB;IRB", {"permission": "HMB", "ethics": APPROVAL}, None),
        ("HMB;IRB", {"permission": "HMB", "ethics": EthicsApproval(reference="EA1/9", valid_from=date(2023, 1, 1),
                                                                     valid_until=date(2024, 12, 31))},
         r"approval EA1/9 is valid 2023-01-01 to 2024-12-31, not on 2025-06-01"),
        ("HMB;TS:2025-06-01", {"permission": "HMB"}, None),
        ("HMB;TS:2025-05-31", {"permission": "HMB"}, r"use was allowed until 2025-05-31 only \(today is 2025-06-01\)"),
        ("HMB;IS:Charite", {"permission": "HMB", "institution": "charite"}, None),
        ("HMB;IS:Charite", {"permission": "HMB", "institution": "UKE"}, r"limited to Charite, the study declares UKE"),
        ("HMB;GS:DE", {"permission": "HMB", "country": "de"}, None),
        ("HMB;GS:EU", {"permission": "HMB", "country": "FR"}, None),
        ("HMB;GS:EU", {"permission": "HMB", "country": "US"}, r"limited to EU, the study declares US"),
        ("HMB;GS:DE", {"permission": "HMB"}, r"the study declares no country"),
        ("HMB;PS:eeg-1", {"permission": "HMB", "project": "eeg-1"}, None),
        ("HMB;PS:eeg-1", {"permission": "HMB", "project": "eeg-2"}, r"limited to project eeg-1"),
        ("HMB;PUB;MOR:2026-01-01", {"permission": "HMB"}, None),
        ("HMB;CC", {"permission": "HMB"}, None),
        ("HMB;NPOA", {"permission": "HMB"}, None),
        ("GRU;NPOA", {"permission": "POA"}, r"NPOA .*: the study is population origins or ancestry research"),
    ],
)
def test_coverage_semantics(terms: str, purpose: dict, reason: str | None) -> None:
    reasons = consent_covers(parse_terms(terms), StudyPurpose(**purpose), TODAY)
    if reason is None:
        assert reasons == []
    else:
        assert len(reasons) == 1, reasons
        assert re.search(reason, reasons[0]), reasons


@pytest.mark.parametrize("code", ["US", "COL", "RS", "GSO", "NMDS"])
def test_undecidable_modifiers_need_the_site(code: str) -> None:
    reasons = consent_covers(parse_terms(f"GRU;{code}"), StudyPurpose(permission="HMB"), TODAY)
    assert reasons == [f"{code} ({DUO_TERMS[code].label}): {MANUAL_REVIEW}"]


def test_publication_terms_are_notes_not_blocks() -> None:
    assert consent_notes(parse_terms("HMB;PUB;MOR:2026-01-01")) == [
        "PUB: results must be made public (publication required)",
        "MOR: no publication before 2026-01-01 (publication moratorium)",
    ]


def test_study_purpose_validates_its_combinations() -> None:
    with pytest.raises(ValueError, match=r"permission DS .* needs a disease id"):
        StudyPurpose(permission="DS")
    with pytest.raises(ValueError, match=r"disease 'MONDO:1' is set, but permission is HMB; use permission DS"):
        StudyPurpose(permission="HMB", disease="MONDO:1")
    with pytest.raises(ValueError, match=r"valid_until \(2024-01-01\) is before valid_from \(2025-01-01\)"):
        EthicsApproval(reference="x", valid_from=date(2025, 1, 1), valid_until=date(2024, 1, 1))
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        StudyPurpose(permission="HMB", comercial=True)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- import
def test_import_tsv_csv_and_json_agree(tmp_path: Path) -> None:
    tsv = _tsv(tmp_path / "participants.tsv",
               "sub-001\t34\tHMB;NCU\t2020-01-02\tn/a\tn/a",
               "sub-002\t51\tn/a\tn/a\tn/a\tn/a",
               "sub-003\t47\tDS:MONDO:0005027\t2021-03-04\t2030-01-01\t2022-05-06")
    csv_path = tmp_path / "consent.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["participant_id", "consent_duo", "consent_date", "consent_expiry", "consent_withdrawn"])
        writer.writerow(["sub-001", "HMB;NCU", "2020-01-02", "", ""])
        writer.writerow(["sub-002", "n/a", "n/a", "n/a", "n/a"])
        writer.writerow(["sub-003", "DS:MONDO:0005027", "2021-03-04", "2030-01-01", "2022-05-06"])
    json_path = tmp_path / "consent.json"
    json_path.write_text(json.dumps([
        {"participant_id": "sub-001", "consent_duo": ["HMB", "NCU"], "consent_date": "2020-01-02"},
        {"participant_id": "sub-002", "consent_duo": None, "consent_date": None},
        {"participant_id": "sub-003", "consent_duo": "DS:MONDO:0005027", "consent_date": "2021-03-04",
         "consent_expiry": "2030-01-01", "consent_withdrawn": "2022-05-06"},
    ]))
    parsed = []
    for source in (tsv, csv_path, json_path):
        records, without = read_consent_source(source)
        assert without == ["sub-002"]
        parsed.append([r.model_dump(exclude={"source"}, mode="json") for r in records])
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0][1] == {"participant_id": "sub-003", "terms": ["DS:MONDO:0005027"], "given": "2021-03-04",
                            "expires": "2030-01-01", "withdrawn": "2022-05-06"}

    state = tmp_path / "state"
    report = import_consent_file(state, tsv)
    assert (report.added, report.without_consent) == (["sub-001", "sub-003"], ["sub-002"])
    assert consent_path(state).stat().st_mode & 0o777 == 0o600
    registry = load_registry(state)
    assert [str(t) for t in registry.get("sub-001").terms] == ["HMB", "NCU"]  # type: ignore[union-attr]
    assert import_consent_file(state, json_path).unchanged == ["sub-001", "sub-003"]


def test_a_bad_file_lists_every_bad_row_and_imports_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    import_consent_file(state, _tsv(tmp_path / "good.tsv", "sub-001\t30\tHMB\t2020-01-01\tn/a\tn/a"))
    before = consent_path(state).read_bytes()
    bad = _tsv(tmp_path / "participants.tsv",
               "sub-001\t30\tHMB\t2020-01-01\tn/a\tn/a",
               "sub-002\t31\tHMX\t2020-01-01\tn/a\tn/a",
               "sub-003\t32\tHMB\t01.02.2020\tn/a\tn/a",
               "sub-004\t33\tHMB\t2020-01-01\t2019-01-01\tn/a",
               "sub-001\t34\tGRU\t2020-01-01\tn/a\tn/a",
               "sub-005\t35\tDS\t2020-01-01\tn/a\tn/a",
               "sub-006\t36\tHMB\tn/a\tn/a\tn/a",
               "sub-007\t37\tn/a\t2020-01-01\tn/a\tn/a",
               "sub-008\t38\tn/a\tn/a\tn/a\t2021-01-01",
               "\t39\tHMB\t2020-01-01\tn/a\tn/a")
    with pytest.raises(ConsentImportError) as caught:
        import_consent_file(state, bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: 9 problem(s), nothing imported:")
    for expected in [
        r"line 3 \(sub-002\), column 'consent_duo': unknown DUO term 'HMX'",
        r"line 4 \(sub-003\), column 'consent_date': '01.02.2020' is not a date; write it as YYYY-MM-DD",
        r"line 5 \(sub-004\), column 'consent_expiry': 2019-01-01 is before consent_date 2020-01-01",
        r"line 6, column 'participant_id': 'sub-001' already appears at line 2; keep one row per participant",
        r"line 7 \(sub-005\), column 'consent_duo': DUO term 'DS': DS .* needs a disease id",
        r"line 8 \(sub-006\), column 'consent_date': empty; give the date consent was given",
        r"line 9 \(sub-007\), column 'consent_duo': empty, but consent_date is 2020-01-01",
        r"line 10 \(sub-008\), column 'consent_withdrawn': '2021-01-01' is set, but the row has no consent",
        r"line 11, column 'participant_id': empty",
    ]:
        assert re.search(expected, message), expected
    assert consent_path(state).read_bytes() == before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.tsv", "participant_id\tconsent_duo\nsub-1\tHMB\n",
         r"p.tsv lacks the column\(s\) \['consent_date', 'consent_expiry', 'consent_withdrawn'\] \(columns found: "
         r"\['participant_id', 'consent_duo'\]\); add them \(tab-separated"),
        ("p.tsv", "", r"p.tsv is empty: it needs a header line with the columns participant_id, consent_duo"),
        ("p.tsv", HEADER + "\nsub-1\t30\tHMB\n", r"line 2: 3 fields, the header has 6"),
        ("p.csv", HEADER.replace("\t", ",") + "\nsub-1,30,HMB;NCU,2020-02-30,n/a,n/a\n",
         r"line 2 \(sub-1\), column 'consent_date': '2020-02-30' is not a date"),
        ("p.json", '{"participant_id": "sub-1"}', r"expected a JSON list of objects with the keys participant_id, .* got a dict"),
        ("p.json", '[{"participant_id": "sub-1",', r"p.json: not valid JSON \(line 1"),
        ("p.json", '[{"participant_id": "sub-1", "consent": "yes"}]',
         r"item 0, field 'consent': Extra inputs are not permitted \(got 'yes'\); allowed keys: participant_id"),
        ("p.json", '[{"participant_id": "sub-1", "consent_duo": "HMB", "consent_date": "2020-01-01",'
                   ' "consent_withdrawn": "2019-12-31"}]',
         r"item 0 \(sub-1\), column 'consent_withdrawn': 2019-12-31 is before consent_date 2020-01-01"),
        ("p.xlsx", "x", r"p.xlsx: cannot import consents from a .xlsx file; use a BIDS participants.tsv, a .csv or a .json"),
    ],
)
def test_bad_sources_are_refused_with_file_row_and_fix(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConsentImportError, match=message):
        import_consent_file(tmp_path / "state", path)
    assert not consent_path(tmp_path / "state").exists()


def test_missing_source_and_corrupt_registry_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConsentImportError, match=r"nope.tsv: file not found"):
        read_consent_source(tmp_path / "nope.tsv")
    state = tmp_path / "state"
    state.mkdir()
    consent_path(state).write_text('{"format_version": 1, "records": [{"participant_id": "sub-1", "terms": ["HMX"]}]}')
    with pytest.raises(ConsentFileError, match=r"consent.json is not a valid consent registry \(records.0.terms.0: .*unknown "
                                               r"DUO term 'HMX'.*re-import the site's consent records"):
        load_registry(state)


# --------------------------------------------------------------------------- updates and withdrawal
def test_reimport_updates_but_never_silently_undoes_a_withdrawal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = _tsv(tmp_path / "old.tsv", "sub-001\t30\tHMB\t2020-01-01\tn/a\tn/a", "sub-002\t31\tHMB\t2020-01-01\tn/a\tn/a")
    import_consent_file(state, old)
    withdraw_participant(state, "sub-001", on=date(2024, 3, 1))

    updated = _tsv(tmp_path / "new.tsv", "sub-001\t30\tHMB\t2020-01-01\tn/a\tn/a", "sub-002\t31\tHMB;NCU\t2020-01-01\tn/a\tn/a")
    report = import_consent_file(state, updated)
    assert (report.updated, report.kept_withdrawn, report.unchanged) == (["sub-002"], ["sub-001"], ["sub-001"])
    registry = load_registry(state)
    assert registry.get("sub-001").withdrawn == date(2024, 3, 1)  # type: ignore[union-attr]
    assert [str(t) for t in registry.get("sub-002").terms] == ["HMB", "NCU"]  # type: ignore[union-attr]

    # A file withdrawing later does not move the withdrawal later.
    import_consent_file(state, _tsv(tmp_path / "later.tsv", "sub-001\t30\tHMB\t2020-01-01\tn/a\t2024-09-01"))
    assert load_registry(state).get("sub-001").withdrawn == date(2024, 3, 1)  # type: ignore[union-attr]

    # A consent given after the withdrawal is a new consent.
    import_consent_file(state, _tsv(tmp_path / "again.tsv", "sub-001\t30\tGRU\t2024-05-01\tn/a\tn/a"))
    assert load_registry(state).get("sub-001").withdrawn is None  # type: ignore[union-attr]

    withdraw_participant(state, "sub-001", on=date(2024, 6, 1))
    assert import_consent_file(state, old, force=True).updated == ["sub-001", "sub-002"]
    assert load_registry(state).get("sub-001").withdrawn is None  # type: ignore[union-attr]


def test_withdraw_checks_the_participant_and_date(tmp_path: Path) -> None:
    state = tmp_path / "state"
    import_consent_file(state, _tsv(tmp_path / "p.tsv", "sub-001\t30\tHMB\t2020-01-01\tn/a\tn/a"))
    with pytest.raises(ConsentError, match=r"participant 'sub-009' has no consent on record, so there is nothing to withdraw"):
        withdraw_participant(state, "sub-009", on=TODAY)
    with pytest.raises(ConsentError, match=r"withdrawal date 2019-12-31 for 'sub-001' is before the consent was given \(2020-01-01\)"):
        withdraw_participant(state, "sub-001", on=date(2019, 12, 31))
    assert withdraw_participant(state, "sub-001", on=date(2024, 1, 1)).withdrawn == date(2024, 1, 1)
    assert withdraw_participant(state, "sub-001", on=date(2024, 2, 1)).withdrawn == date(2024, 1, 1)


# --------------------------------------------------------------------------- eligibility
def test_eligibility_dates_terms_and_absent_participants(tmp_path: Path) -> None:
    state = tmp_path / "state"
    import_consent_file(state, _tsv(
        tmp_path / "p.tsv",
        "sub-001\t30\tHMB\t2020-01-01\tn/a\tn/a",
        "sub-002\t31\tHMB\t2020-01-01\t2025-05-31\tn/a",
        "sub-003\t32\tHMB\t2020-01-01\t2025-06-01\tn/a",
        "sub-004\t33\tHMB\t2020-01-01\tn/a\t2025-06-01",
        "sub-005\t34\tHMB\t2020-01-01\tn/a\t2025-06-02",
        "sub-006\t35\tHMB\t2025-06-02\tn/a\tn/a",
        "sub-007\t36\tDS:MONDO:0005180;PUB\t2020-01-01\tn/a\tn/a",
        "sub-008\t37\tHMB;PUB\t2020-01-01\tn/a\tn/a",
    ))
    result = eligibility(load_registry(state), StudyPurpose(permission="HMB"), TODAY,
                         participant_ids=[f"sub-00{i}" for i in range(1, 10)])
    assert {p for p, e in result.items() if e.eligible} == {"sub-001", "sub-003", "sub-005", "sub-008"}
    assert result["sub-002"].reasons == ["consent expired on 2025-05-31"]
    assert result["sub-004"].reasons == ["consent withdrawn on 2025-06-01"]
    assert result["sub-006"].reasons == ["consent dated 2025-06-02, after 2025-06-01"]
    assert result["sub-009"].reasons == ["no consent on record"]
    assert result["sub-008"].notes == ["PUB: results must be made public (publication required)"]
    summary = summarize(result)
    assert summary.model_dump() == {
        "total": 9, "eligible": 4, "ineligible": 5,
        "reasons": {"expired": 1, "no consent": 1, "not yet given": 1, "permission": 1, "withdrawn": 1},
        "notes": {"PUB: results must be made public (publication required)": 1},
    }


def test_the_synthetic_site_carries_importable_consents(tmp_path: Path) -> None:
    from fedneuro.data.synth import DEFAULT_PROFILES, synthesize_site

    root = synthesize_site(tmp_path, DEFAULT_PROFILES[0], n_participants=40, duration_s=10.0, seed=11, layout="loose", format="FIF")
    with (root / "participants.tsv").open(encoding="utf-8") as fh:
        consent = {r["participant_id"]: r["consent"] for r in csv.DictReader(fh, delimiter="\t")}
    records, without = read_consent_source(root / "participants.tsv")
    assert set(without) == {p for p, c in consent.items() if c == "no"}
    assert {r.participant_id for r in records if r.withdrawn} == {p for p, c in consent.items() if c == "withdrawn"}
    state = tmp_path / "state"
    import_consent_file(state, root / "participants.tsv")
    result = eligibility(load_registry(state), StudyPurpose(permission="HMB", ethics=APPROVAL), TODAY, participant_ids=consent)
    yes = [p for p, c in consent.items() if c == "yes"]
    assert sum(result[p].eligible for p in yes) >= 0.85 * len(yes)
    assert not any(result[p].eligible for p, c in consent.items() if c != "yes")
    assert {k for e in result.values() for k in e.kinds} >= {"no consent", "withdrawn", "expired", "permission"}


# --------------------------------------------------------------------------- contributions
def test_contributions_record_and_impact(tmp_path: Path) -> None:
    path = contributions_path(tmp_path)
    now = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
    assert impact(path, "sub-001") == []
    record_contribution(path, study_id="eeg-1", server_round=1, participants=["sub-002", "sub-001", "sub-001"], now=now)
    record_contribution(path, study_id="eeg-1", server_round=2, participants=["sub-002"], now=now)
    record_contribution(path, study_id="mri-1", server_round=1, participants=["sub-001"], now=now, model_version="mri-1@v7")
    assert read_contributions(path)[0].participants == ["sub-001", "sub-002"]
    assert [tuple(i) for i in impact(path, "sub-001")] == [("eeg-1", 1, "eeg-1@round-1"), ("mri-1", 1, "mri-1@v7")]
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="recorded_at needs a time zone"):
        record_contribution(path, study_id="x", server_round=1, participants=[], now=datetime(2025, 1, 1))
    with path.open("a") as fh:
        fh.write('{"study_id": "eeg-1", "round": 0}\n')
    with pytest.raises(ContributionError, match=r"contributions.jsonl, line 4, field 'round': Input should be greater than or equal to 1"):
        impact(path, "sub-001")


# --------------------------------------------------------------------------- CLI
def _cli(*args: str, code: int = 0) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else {"output": result.output}


def test_cli_import_list_status_withdraw_impact(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    source = _tsv(tmp_path / "participants.tsv",
                  "sub-001\t30\tHMB\t2020-01-01\tn/a\tn/a",
                  "sub-002\t31\tHMB;NCU\t2020-01-01\tn/a\tn/a",
                  "sub-003\t32\tn/a\tn/a\tn/a\tn/a")
    report = _cli("consent", "import", str(source), "--state-dir", state)
    assert set(report) == {"source", "added", "updated", "unchanged", "kept_withdrawn", "without_consent", "warnings"}
    assert report["added"] == ["sub-001", "sub-002"]
    listed = _cli("consent", "list", "--state-dir", state)
    assert [r["terms"] for r in listed["records"]] == [["HMB"], ["HMB", "NCU"]]

    status = _cli("consent", "status", "--state-dir", state, "--purpose", "HMB", "--commercial",
                  "--participants", str(source), "--date", "2025-06-01")
    assert set(status) == {"state_dir", "date", "purpose", "summary", "participants"}
    assert status["summary"] == {"total": 3, "eligible": 1, "ineligible": 2,
                                 "reasons": {"NCU": 1, "no consent": 1}, "notes": {}}
    ds = _cli("consent", "status", "--state-dir", state, "--purpose", "DS:MONDO:0005027", "--date", "2025-06-01")
    assert ds["purpose"]["disease"] == "MONDO:0005027" and ds["summary"]["eligible"] == 2

    record_contribution(contributions_path(Path(state)), study_id="eeg-1", server_round=3,
                        participants=["sub-001"], now=datetime(2025, 1, 1, tzinfo=timezone.utc))
    withdrawn = _cli("consent", "withdraw", "sub-001", "--state-dir", state, "--date", "2025-02-01")
    assert withdrawn["withdrawn"] == "2025-02-01"
    assert withdrawn["model_versions"] == [{"study_id": "eeg-1", "round": 3, "model_version": "eeg-1@round-3"}]
    used = _cli("consent", "impact", "sub-001", "--state-dir", state)
    assert used["model_versions"] == withdrawn["model_versions"]

    plain = runner.invoke(app, ["consent", "status", "--state-dir", state, "--date", "2025-06-01"])
    assert plain.exit_code == 0 and "1 of 2 participants eligible for HMB on 2025-06-01" in plain.stdout
    assert "sub-001: consent withdrawn on 2025-02-01" in plain.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["consent", "status", "--purpose", "ALL"], "Invalid value for '--purpose': 'ALL'. Use GRU, HMB, POA or DS:<disease id>"),
        (["consent", "status", "--date", "1.2.2025"], "Invalid value for '--date': '1.2.2025'. Write the date as YYYY-MM-DD"),
        (["consent", "status", "--ethics-ref", "EA1"], "--ethics-ref, --ethics-from and --ethics-until go together"),
        (["consent", "withdraw", "sub-404"], "participant 'sub-404' has no consent on record"),
        (["consent", "import", "missing.tsv"], "missing.tsv: file not found"),
    ],
)
def test_cli_errors_name_the_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
