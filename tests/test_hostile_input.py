"""Hostile input: every parser and loader answers bad bytes, bad values and tampered state
with its documented error (a ``ValueError`` subclass or the module's own error) whose message
names the file or field and the problem; writers leave nothing half-written.

Bad cases: 115 named ones, plus 14 property-based families (hypothesis):

* study files (``parse_study``/``load_study``), 23: unknown top-level key, unknown nested
  key, wrong type, a section of the wrong type, σ = 0, σ < 0, σ = inf, σ = nan, C = 0,
  C = inf, rounds = 0, rounds huge, learning rate inf, max_update_norm inf, round timeout inf,
  δ = 1, secure aggregation + trimmed mean, secure aggregation + Multi-Krum, secure
  aggregation without max_update_norm, id with a path, invalid TOML, a seed beyond 64 bits
  a seed beyond 64 bits, non-UTF-8 bytes; property:
  random TOML-ish documents.
* site policies (``load_site_policy``), 13: unknown key, non-boolean require_dp, lifetime
  below per-study budget, negative budget, unknown DUO purpose, a modifier as purpose, bad
  weights sha256, unknown backbone, missing trusted key, RSA trusted key, garbage PEM trusted
  key, invalid TOML; non-UTF-8; property: random TOML-ish.
* site configs (``load_site_config``), 10: unknown key, bad site name, missing state_dir,
  invalid TOML, invalid JSON, JSON list, non-UTF-8, 100 000-deep JSON, bad nested policy
  value, missing file.
* consent sources (``read_consent_source``/``import_consent_file``), 15: unknown DUO term,
  impossible date, non-ISO date, duplicate participant, missing column, binary garbage, JSON
  object instead of list, unknown JSON key, 100 000-deep JSON, a CSV field over the csv
  module's limit, wrong field count, expiry before consent, unsupported suffix, DS without a
  disease, and a bad import over an existing registry (registry intact, no temp file);
  property: random bytes as .tsv/.csv/.json.
* audit logs (``verify_audit_log``), 3: a non-UTF-8 line, a 100 000-deep JSON line, a garbage
  head; properties: random edits of a valid log are detected (or change nothing the log
  means), random JSON lines are reported, never raised.
* signing keys (``load_signing_key``/``load_public_key``), 10: RSA, EC, X25519, Ed448,
  encrypted PEM, garbage PEM body, public key where a private one is expected, unknown
  algorithm OID, empty file, missing file; property: random bytes.
* kits (``load_kit``) and consortium files, 7: kit.json garbage bytes, kit.json a list,
  100 000-deep kit.json, a file kit.json names is missing, a path escaping the kit folder,
  no kit.json, a non-UTF-8 consortium file; properties: random kit.json bytes, random
  consortium TOML-ish.
* received updates at the coordinator (``run_rounds`` with the real ClientApp in-process),
  19: NaN, Inf, an update far beyond max_update_norm, wrong shape, wrong dtype, extra tensor,
  missing tensor, wrong manifest digest, undecodable tensor bytes, tensor of another
  serialisation type, missing metric, extra metric, negative weight, an extra record, a
  site whose own ledger is corrupt (real error reply), evaluation: non-square confusion,
  negative counts, missing confusion; and too few valid updates (the round fails loudly);
  property: random arrays against the exchange manifest.
* the privacy ledger, 6: a torn last line, non-UTF-8 bytes, 100 000-deep JSON, σ = Infinity,
  a JSON list, NUL bytes; property: random bytes lines.
* the coordinator checkpoint, 8: state.json not JSON, a field missing, a tensor hash changed,
  a tensor changed, a tensor file missing, state.json re-hashed to a garbage tensor file, a
  tampered RNG state, a negative round; property: random bytes as state.json.
* EEG/MRI files (``tests/test_data_*.py`` already hold ~80 named malformed files; these add
  properties), 1: a NIfTI header declaring 32767³ voxels; properties: random EDF headers,
  random BrainVision headers, mutated NIfTI headers.

Counts: 23 + 13 + 10 + 15 + 3 + 10 + 7 + 19 + 6 + 8 + 1 = 115. The property tests try 60
examples each (``FEDNEURO_FUZZ_EXAMPLES`` for more); they found the NIfTI header crashes fixed
in ``fedneuro/data/mri_read.py``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedneuro.data.errors import RecordingReadError
from fedneuro.data.preflight import preflight
from fedneuro.deploy.consortium import ConsortiumFileError, load_consortium
from fedneuro.deploy.provision import KitError, load_kit, provision
from fedneuro.federation.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fedneuro.federation.codec import decode_arrays, encode_arrays
from fedneuro.federation.launch import LaunchError, load_site_config
from fedneuro.governance.audit import AuditLog, head_path_for, verify_audit_log
from fedneuro.governance.consent import (
    ConsentImportError,
    consent_path,
    import_consent_file,
    load_registry,
    read_consent_source,
)
from fedneuro.governance.keys import KeyFileError, generate_signing_key, load_public_key, load_signing_key
from fedneuro.governance.policy import SitePolicyError, load_site_policy
from fedneuro.models.manifest import ExchangeError, TensorManifest
from fedneuro.privacy.ledger import LedgerEntry, LedgerError, PrivacyLedger
from fedneuro.study import StudyFileError, load_study, parse_study

# Hostile inputs are cheap to try; keep every property quick and the run reproducible
# (FEDNEURO_FUZZ_EXAMPLES=2000 for a deeper search).
FAST = settings(max_examples=int(os.environ.get("FEDNEURO_FUZZ_EXAMPLES", "60")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DEEP_JSON = "[" * 100_000


# =========================================================================== study files
STUDY = '[study]\nid = "hostile"\n'


@pytest.mark.parametrize(("text", "match"), [
    pytest.param(STUDY + "[studdy]\nid = 1\n", r"\[studdy\]: unknown key", id="unknown-section"),
    pytest.param(STUDY + "[privacy]\nsigma = 1.0\n", r"\[privacy\] sigma: unknown key", id="unknown-key"),
    pytest.param(STUDY + '[privacy]\nnoise_multiplier = "lots"\n',
                 r"\[privacy\] noise_multiplier: Input should be a valid number.*'lots'", id="wrong-type"),
    pytest.param("privacy = 3\n" + STUDY, r"\[privacy\]: Input should be a valid dictionary", id="section-of-wrong-type"),
    pytest.param(STUDY + "[privacy]\nnoise_multiplier = 0\n", r"\[privacy\] noise_multiplier: .*greater than 0 \(got 0\)",
                 id="sigma-zero"),
    pytest.param(STUDY + "[privacy]\nnoise_multiplier = -1.5\n", r"\[privacy\] noise_multiplier: .*greater than 0",
                 id="sigma-negative"),
    pytest.param(STUDY + "[privacy]\nnoise_multiplier = inf\n", r"\[privacy\] noise_multiplier: .*finite number",
                 id="sigma-inf"),
    pytest.param(STUDY + "[privacy]\nnoise_multiplier = nan\n", r"\[privacy\] noise_multiplier: .*finite number",
                 id="sigma-nan"),
    pytest.param(STUDY + "[privacy]\nmax_grad_norm = 0\n", r"\[privacy\] max_grad_norm: .*greater than 0", id="C-zero"),
    pytest.param(STUDY + "[privacy]\nmax_grad_norm = inf\n", r"\[privacy\] max_grad_norm: .*finite number", id="C-inf"),
    pytest.param(STUDY + "[federation]\nrounds = 0\n", r"\[federation\] rounds: .*greater than or equal to 1",
                 id="rounds-zero"),
    pytest.param(STUDY + "[federation]\nrounds = 99999999999999999999\n",
                 r"\[federation\] rounds: .*less than or equal to 10000", id="rounds-huge"),
    pytest.param(STUDY + "[training]\nlearning_rate = inf\n", r"\[training\] learning_rate: .*finite number",
                 id="learning-rate-inf"),
    pytest.param(STUDY + "[federation]\nmax_update_norm = inf\n", r"\[federation\] max_update_norm: .*finite number",
                 id="max-update-norm-inf"),
    pytest.param(STUDY + "[federation]\nround_timeout_s = inf\n", r"\[federation\] round_timeout_s: .*finite number",
                 id="round-timeout-inf"),
    pytest.param(STUDY + "[privacy]\ndelta = 1.0\n", r"\[privacy\] delta: .*less than 1", id="delta-one"),
    pytest.param(STUDY + '[federation]\nstrategy = "trimmed-mean"\nmax_update_norm = 1.0\n'
                 "[federation.secure_aggregation]\nenabled = true\n",
                 r"\[federation\]: .*strategy 'trimmed-mean' must see every site's update", id="secagg-trimmed-mean"),
    pytest.param(STUDY + '[federation]\nstrategy = "multikrum"\nmax_update_norm = 1.0\n'
                 "[federation.secure_aggregation]\nenabled = true\n",
                 r"\[federation\]: .*strategy 'multikrum' must see every site's update", id="secagg-multikrum"),
    pytest.param(STUDY + "[federation.secure_aggregation]\nenabled = true\n",
                 r"\[federation\]: .*secure aggregation needs max_update_norm", id="secagg-without-norm"),
    pytest.param(STUDY.replace('"hostile"', '"../../etc"'), r"\[study\] id: String should match pattern",
                 id="id-with-path"),
    pytest.param(STUDY + "[privacy\nnoise_multiplier = 1\n", r"hostile.toml is not valid TOML: .*line 3", id="bad-toml"),
    pytest.param(STUDY.replace('"hostile"', '"hostile"\nseed = 99999999999999999999999'),
                 r"\[study\] seed: ", id="seed-beyond-64-bits"),
])
def test_a_bad_study_file_is_refused_naming_the_key(text: str, match: str) -> None:
    with pytest.raises(StudyFileError, match=match) as caught:
        parse_study(text, source="hostile.toml")
    assert str(caught.value).startswith("hostile.toml")


def test_a_non_utf8_study_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_bytes(STUDY.encode() + b'title = "caf\xe9"\n')
    with pytest.raises(StudyFileError, match=r"study.toml"):
        load_study(path)


# TOML-ish documents: real sections and keys (plus junk) with hostile values.
_SECTIONS = ["study", "data", "model", "model.adapter", "privacy", "training", "federation",
             "federation.secure_aggregation", "governance", "junk"]
_KEYS = ["id", "seed", "modality", "backbone", "weights", "rank", "alpha", "noise_multiplier", "max_grad_norm", "delta",
         "unit", "accountant", "rounds", "strategy", "max_update_norm", "min_sites", "enabled", "num_shares",
         "learning_rate", "batch_size", "local_epochs", "classes", "h_freq", "l_freq", "label_column", "junk"]
_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["inf", "-inf", "nan", "0", "-0.0", "1e308", "1e-320", "true", "false", "[]", "{}",
                     '"biot-tiny"', '"mri"', '"fedavg"', '"multikrum"', '"participant"', "1979-05-27",
                     '{ a = 1, b = "x" }', "[1, [2, 3]]", '"\\u0000"']),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=12).map(json.dumps),
)


@st.composite
def toml_ish(draw: st.DrawFn, sections: list[str], keys: list[str], *, head: str = "") -> str:
    lines = [head]
    for _ in range(draw(st.integers(0, 5))):
        if sections and draw(st.booleans()):
            lines.append(f"[{draw(st.sampled_from(sections))}]")
        for _ in range(draw(st.integers(0, 4))):
            lines.append(f"{draw(st.sampled_from(keys))} = {draw(_VALUES)}")
    if draw(st.integers(0, 9)) == 0:  # now and then, plain garbage
        lines.append(draw(st.text(max_size=30)))
    return "\n".join(lines) + "\n"


@FAST
@given(toml_ish(_SECTIONS, _KEYS, head=STUDY))
def test_random_toml_ish_study_text_never_crashes_the_parser(text: str) -> None:
    try:
        parse_study(text, source="fuzz.toml")
    except StudyFileError as error:
        assert str(error).startswith("fuzz.toml")


# =========================================================================== site policies


def _pem_public(kind: str) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = rsa.generate_private_key(65537, 1024) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("text", "files", "match"), [
    pytest.param("max_epsilon_per_studdy = 3.0\n", {}, r"max_epsilon_per_studdy: unknown key", id="unknown-key"),
    pytest.param("require_dp = 1\n", {}, r"require_dp: Input should be a valid boolean", id="require-dp-not-bool"),
    pytest.param("max_epsilon_per_study = 5.0\nmax_epsilon_lifetime = 2.0\n", {},
                 r"max_epsilon_lifetime \(2.0\) is below max_epsilon_per_study \(5.0\)", id="lifetime-below-study"),
    pytest.param("max_epsilon_per_study = -1\n", {}, r"max_epsilon_per_study: Input should be greater than 0",
                 id="negative-budget"),
    pytest.param('accepted_purposes = ["XYZ"]\n', {}, r"accepted_purposes\[0\]: .*XYZ", id="unknown-purpose"),
    pytest.param('accepted_purposes = ["NCU"]\n', {}, r"accepted_purposes: .*'NCU'.* is a modifier, not a purpose",
                 id="modifier-as-purpose"),
    pytest.param('[[allowed_backbones]]\nbackbone = "biot-tiny"\nweights_sha256 = "abc"\n', {},
                 r"allowed_backbones\[0\].weights_sha256: .*'abc' is neither a sha256", id="bad-weights-hash"),
    pytest.param('[[allowed_backbones]]\nbackbone = "gpt-9"\nweights_sha256 = "random-init"\n', {},
                 r"allowed_backbones\[0\].backbone: .*'gpt-9'. Registered presets", id="unknown-backbone"),
    pytest.param('trusted_coordinator_keys = ["absent.pub"]\n', {},
                 r"trusted_coordinator_keys\[0\]: .*absent.pub: public key file not found", id="missing-trusted-key"),
    pytest.param('trusted_coordinator_keys = ["rsa.pub"]\n', {"rsa.pub": "rsa"},
                 r"trusted_coordinator_keys\[0\]: .*rsa.pub: a RSAPublicKey, but signing keys must be Ed25519",
                 id="rsa-trusted-key"),
    pytest.param('trusted_coordinator_keys = ["junk.pub"]\n',
                 {"junk.pub": b"-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n"},
                 r"trusted_coordinator_keys\[0\]: .*junk.pub: not a PEM public key", id="garbage-pem-trusted-key"),
    pytest.param("max_epsilon_per_study = = 3\n", {}, r"policy.toml is not valid TOML", id="bad-toml"),
])
def test_a_bad_site_policy_is_refused_naming_the_key(tmp_path: Path, text: str, files: dict, match: str) -> None:
    for name, content in files.items():
        (tmp_path / name).write_bytes(_pem_public(content) if isinstance(content, str) else content)
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SitePolicyError, match=match) as caught:
        load_site_policy(path)
    assert str(path) in str(caught.value)


def test_a_non_utf8_policy_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(b"# H\xf4pital A\nmax_epsilon_per_study = 3.0\n")
    with pytest.raises(SitePolicyError, match="policy.toml"):
        load_site_policy(path)


_POLICY_KEYS = ["max_epsilon_per_study", "max_epsilon_lifetime", "require_secure_aggregation", "accepted_purposes",
                "min_participants", "require_dp", "allowed_backbones", "trusted_coordinator_keys", "junk"]


@FAST
@given(toml_ish(["allowed_backbones", "junk"], [*_POLICY_KEYS, "backbone", "weights_sha256"]))
def test_random_toml_ish_policies_never_crash_the_loader(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_site_policy(path)
    except SitePolicyError as error:
        assert str(path) in str(error)


# =========================================================================== site configs

SITE = 'name = "hospital-a"\nbids_root = "data"\nstate_dir = "state"\n'


@pytest.mark.parametrize(("name", "content", "match"), [
    pytest.param("site.toml", SITE + 'colour = "red"\n', r"colour: Extra inputs are not permitted", id="unknown-key"),
    pytest.param("site.toml", SITE.replace("hospital-a", "../hospital"), r"name: String should match pattern",
                 id="bad-name"),
    pytest.param("site.toml", 'name = "a"\nbids_root = "data"\n', r"state_dir: Field required", id="missing-state-dir"),
    pytest.param("site.toml", SITE + "[policy\n", r"is not valid TOML", id="bad-toml"),
    pytest.param("site.json", '{"name": "a",', r"is not valid JSON", id="bad-json"),
    pytest.param("site.json", "[1, 2]", r"\(top level\): Input should be a valid dictionary", id="json-list"),
    pytest.param("site.toml", SITE.encode() + b"# H\xf4pital\n", r"is not UTF-8 text", id="non-utf8"),
    pytest.param("site.json", DEEP_JSON, r"is not valid JSON.*nested too deeply", id="deep-json"),
    pytest.param("site.toml", SITE + '[policy]\nrequire_dp = "yes"\n', r"policy.require_dp: Input should be a valid boolean",
                 id="bad-nested-policy"),
])
def test_a_bad_site_config_is_refused_naming_the_file_and_key(tmp_path: Path, name: str, content: str | bytes,
                                                             match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LaunchError, match=match) as caught:
        load_site_config(path)
    assert str(path) in str(caught.value)


def test_a_missing_site_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"cannot read site config .*absent.toml: No such file"):
        load_site_config(tmp_path / "absent.toml")


# =========================================================================== consent sources

HEADER = "participant_id\tconsent_duo\tconsent_date\tconsent_expiry\tconsent_withdrawn\n"


def _row(*cells: str) -> str:
    return "\t".join(cells) + "\n"


@pytest.mark.parametrize(("name", "content", "match"), [
    pytest.param("p.tsv", HEADER + _row("sub-01", "XYZ", "2024-01-01", "n/a", "n/a"),
                 r"line 2 \(sub-01\), column 'consent_duo': unknown DUO term 'XYZ'", id="unknown-duo-term"),
    pytest.param("p.tsv", HEADER + _row("sub-01", "HMB", "2024-13-01", "n/a", "n/a"),
                 r"line 2 \(sub-01\), column 'consent_date': '2024-13-01' is not a date", id="impossible-date"),
    pytest.param("p.tsv", HEADER + _row("sub-01", "HMB", "01/02/2024", "n/a", "n/a"),
                 r"column 'consent_date': '01/02/2024' is not a date; write it as YYYY-MM-DD", id="non-iso-date"),
    pytest.param("p.tsv", HEADER + _row("sub-01", "HMB", "2024-01-01", "n/a", "n/a") * 2,
                 r"line 3, column 'participant_id': 'sub-01' already appears at line 2", id="duplicate-participant"),
    pytest.param("p.tsv", "participant_id\tconsent_duo\tconsent_date\nsub-01\tHMB\t2024-01-01\n",
                 r"lacks the column\(s\) \['consent_expiry', 'consent_withdrawn'\]", id="missing-column"),
    pytest.param("p.tsv", bytes(range(256)) * 4, r"cannot read it as UTF-8 text", id="binary-garbage"),
    pytest.param("p.json", '{"participant_id": "sub-01"}', r"expected a JSON list of objects .*got a dict",
                 id="json-object"),
    pytest.param("p.json", '[{"participant_id": "sub-01", "consent": "HMB"}]',
                 r"item 0, field 'consent': Extra inputs are not permitted.*allowed keys", id="unknown-json-key"),
    pytest.param("p.json", DEEP_JSON, r"not valid JSON .*nested too deeply", id="deep-json"),
    pytest.param("p.csv", HEADER.replace("\t", ",") + "sub-01," + "H" * 200_000 + ",2024-01-01,n/a,n/a\n",
                 r"line 2: .*field larger than field limit", id="huge-csv-field"),
    pytest.param("p.tsv", HEADER + "sub-01\tHMB\t2024-01-01\n", r"line 2: 3 fields, the header has 5",
                 id="wrong-field-count"),
    pytest.param("p.tsv", HEADER + _row("sub-01", "HMB", "2024-01-01", "2023-01-01", "n/a"),
                 r"column 'consent_expiry': 2023-01-01 is before consent_date 2024-01-01", id="expiry-before-consent"),
    pytest.param("p.xlsx", b"PK\x03\x04", r"cannot import consents from a .xlsx file", id="unsupported-suffix"),
    pytest.param("p.tsv", HEADER + _row("sub-01", "DS", "2024-01-01", "n/a", "n/a"),
                 r"column 'consent_duo': DUO term 'DS': .*needs a disease id", id="ds-without-disease"),
])
def test_a_bad_consent_source_is_refused_naming_the_row(tmp_path: Path, name: str, content: str | bytes,
                                                       match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConsentImportError, match=match) as caught:
        read_consent_source(path)
    assert str(path) in str(caught.value)


def test_a_bad_import_leaves_the_registry_as_it_was(tmp_path: Path) -> None:
    state = tmp_path / "state"
    good = tmp_path / "good.tsv"
    good.write_text(HEADER + _row("sub-01", "HMB", "2024-01-01", "n/a", "n/a"), encoding="utf-8")
    import_consent_file(state, good)
    before = consent_path(state).read_bytes()
    bad = tmp_path / "bad.tsv"
    bad.write_text(HEADER + _row("sub-01", "HMB", "2024-01-01", "n/a", "2025-01-01")
                   + _row("sub-02", "NOPE", "2024-01-01", "n/a", "n/a"), encoding="utf-8")
    with pytest.raises(ConsentImportError, match=r"bad.tsv: 1 problem\(s\), nothing imported"):
        import_consent_file(state, bad)
    assert consent_path(state).read_bytes() == before
    assert load_registry(state).get("sub-01").withdrawn is None  # type: ignore[union-attr]
    assert sorted(p.name for p in state.iterdir()) == [".consent.json.lock", "consent.json"]


@FAST
@given(suffix=st.sampled_from([".tsv", ".csv", ".json"]),
       blob=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                      st.lists(st.text(alphabet="\t,\n;:\"[]{}HMBDSGRU-0123456789/an", max_size=20), max_size=12)
                      .map(lambda parts: (HEADER + "".join(parts)).encode())))
def test_random_consent_sources_are_refused_or_read_never_crash(tmp_path: Path, suffix: str, blob: bytes) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(blob)
    try:
        read_consent_source(path)
    except ConsentImportError as error:
        assert str(path) in str(error)


# =========================================================================== audit logs

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
AUDIT_KEY = generate_signing_key()


@pytest.fixture(scope="module")
def audit_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(log bytes, head bytes) of a valid log of 4 entries."""
    log = AuditLog(tmp_path_factory.mktemp("audit") / "audit.jsonl", AUDIT_KEY, actor="hospital-a")
    for i in range(4):
        log.append("round-trained", {"round": i + 1, "epsilon": 0.5 * (i + 1), "note": "é✓"}, now=T0 + timedelta(minutes=i))
    return log.path.read_bytes(), log.head_path.read_bytes()


def _audit_files(tmp_path: Path, log: bytes, head: bytes) -> Path:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(log)
    head_path_for(path).write_bytes(head)
    return path


def _meaning(blob: bytes) -> list[object] | None:
    """What a log says, line by line, ignoring JSON formatting; None when unreadable."""
    try:
        return [json.loads(line) for line in blob.decode("utf-8").split("\n") if line]
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


@pytest.mark.parametrize(("line", "match"), [
    pytest.param(b'{"seq": 5, "note": "\xff\xfe"}', r"not a JSON object \(UnicodeDecodeError", id="non-utf8-line"),
    pytest.param(DEEP_JSON.encode(), r"not a JSON object \(RecursionError", id="deep-json-line"),
])
def test_a_hostile_audit_line_is_reported_on_its_line(tmp_path: Path, audit_log: tuple[bytes, bytes], line: bytes,
                                                      match: str) -> None:
    log, head = audit_log
    path = _audit_files(tmp_path, log + line + b"\n", head)
    result = verify_audit_log(path, AUDIT_KEY.public_key())
    assert not result.ok
    bad = [p for p in result.problems if p.line == 5]
    assert bad and bad[0].kind == "malformed" and any(re.search(match, p.message) for p in bad)


def test_a_garbage_head_is_reported(tmp_path: Path, audit_log: tuple[bytes, bytes]) -> None:
    path = _audit_files(tmp_path, audit_log[0], b"\x00\xffnot json")
    result = verify_audit_log(path, AUDIT_KEY.public_key())
    assert not result.ok and [p.kind for p in result.problems] == ["head"]
    assert "audit.jsonl.head is malformed" in result.problems[0].message


_EDITS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 40)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=20)),
    st.tuples(st.just("swap-lines"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("drop-line"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("duplicate-line"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
)


def _edit(blob: bytes, edit: tuple) -> bytes:
    kind, where, what = edit
    at = where % (len(blob) + 1)
    if kind == "flip":
        if not blob:
            return blob
        at = where % len(blob)
        return blob[:at] + bytes([blob[at] ^ what]) + blob[at + 1:]
    if kind == "delete":
        return blob[:at] + blob[at + what:]
    if kind == "insert":
        return blob[:at] + what + blob[at:]
    if kind == "truncate":
        return blob[:at]
    lines = blob.split(b"\n")
    if len(lines) < 2:
        return blob
    where, what = where % len(lines), what % len(lines)
    if kind == "swap-lines":
        lines[where], lines[what] = lines[what], lines[where]
    elif kind == "drop-line":
        del lines[where]
    else:
        lines.insert(where, lines[where])
    return b"\n".join(lines)


@FAST
@given(edits=st.lists(_EDITS, min_size=1, max_size=3))
def test_random_edits_of_an_audit_log_are_detected_never_raised(tmp_path: Path, audit_log: tuple[bytes, bytes],
                                                                edits: list[tuple]) -> None:
    log, head = audit_log
    edited = log
    for edit in edits:
        edited = _edit(edited, edit)
    assume(edited != log)
    path = _audit_files(tmp_path, edited, head)
    result = verify_audit_log(path, AUDIT_KEY.public_key())  # hostile content is reported, never raised
    # Only an edit that changes nothing the log says (JSON spacing, escapes) may pass.
    assert not result.ok or _meaning(edited) == _meaning(log)
    assert all(p.line is None or p.line >= 1 for p in result.problems)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


@FAST
@given(value=st.one_of(_JSON, st.fixed_dictionaries({"seq": st.integers(), "hash": st.text(max_size=70),
                                                      "prev": st.just("0" * 64), "signature": st.text(max_size=10),
                                                      "time": st.text(max_size=30), "data": _JSON})))
def test_random_json_audit_lines_are_reported_never_raised(tmp_path: Path, audit_log: tuple[bytes, bytes],
                                                           value: object) -> None:
    log, head = audit_log
    path = _audit_files(tmp_path, log + json.dumps(value).encode() + b"\n", head)
    result = verify_audit_log(path, AUDIT_KEY.public_key())
    assert not result.ok
    assert any(p.line == 5 for p in result.problems) or any(p.kind in ("head", "truncated") for p in result.problems)


# =========================================================================== signing keys



def _private_pem(kind: str) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519

    key = {"rsa": lambda: rsa.generate_private_key(65537, 1024), "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
           "x25519": x25519.X25519PrivateKey.generate, "ed448": ed448.Ed448PrivateKey.generate}[kind]()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _unknown_algorithm_pem() -> bytes:
    """A PKCS#8 private key whose algorithm is OID 1.2.3.4 (no such key type)."""
    oid = bytes([0x06, 0x03, 0x2A, 0x03, 0x04])
    algorithm = bytes([0x30, len(oid)]) + oid
    body = bytes([0x02, 0x01, 0x00]) + algorithm + bytes([0x04, 0x02, 0x01, 0x02])
    der = bytes([0x30, len(body)]) + body
    return b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(("content", "match"), [
    pytest.param(lambda: _private_pem("rsa"), r"a RSAPrivateKey, but signing keys must be Ed25519", id="rsa"),
    pytest.param(lambda: _private_pem("ec"), r"a EllipticCurvePrivateKey|a ECPrivateKey", id="ec"),
    pytest.param(lambda: _private_pem("x25519"), r"a X25519PrivateKey, but signing keys must be Ed25519", id="x25519"),
    pytest.param(lambda: _private_pem("ed448"), r"a Ed448PrivateKey, but signing keys must be Ed25519", id="ed448"),
    pytest.param(lambda: generate_signing_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")),
        r"not an unencrypted PEM private key \(Password was not given", id="encrypted"),
    pytest.param(lambda: b"-----BEGIN PRIVATE KEY-----\nZZZZ\n-----END PRIVATE KEY-----\n",
                 r"not an unencrypted PEM private key", id="garbage-pem-body"),
    pytest.param(lambda: generate_signing_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        r"not an unencrypted PEM private key", id="public-instead-of-private"),
    pytest.param(_unknown_algorithm_pem, r"not an unencrypted PEM private key \(Unknown key type: 1.2.3.4", id="unknown-oid"),
    pytest.param(lambda: b"", r"not an unencrypted PEM private key", id="empty"),
])
def test_a_bad_signing_key_file_is_refused_naming_the_file(tmp_path: Path, content: Callable[[], bytes],
                                                          match: str) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(content())
    with pytest.raises(KeyFileError, match=match) as caught:
        load_signing_key(path)
    assert str(caught.value).startswith(str(path))


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"absent.key: private key file not found"):
        load_signing_key(tmp_path / "absent.key")


@FAST
@given(blob=st.one_of(st.binary(max_size=200),
                      st.binary(max_size=120).map(lambda b: b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(b)
                                                  + b"-----END PUBLIC KEY-----\n"),
                      st.binary(max_size=120).map(lambda b: b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(b)
                                                  + b"-----END PRIVATE KEY-----\n")))
def test_random_key_files_are_refused_with_key_file_error(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "fuzz.pem"
    path.write_bytes(blob)
    for load in (load_signing_key, load_public_key):
        with pytest.raises(KeyFileError, match=r"fuzz.pem: "):
            load(path)


# =========================================================================== kits and consortium files

CONSORTIUM = '[consortium]\nname = "c"\n\n[coordinator]\nhost = "coord.example.org"\n\n[[sites]]\nname = "hospital-a"\n'


@pytest.fixture(scope="module")
def site_kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kits")
    (root / "consortium.toml").write_text(CONSORTIUM, encoding="utf-8")
    provision(load_consortium(root / "consortium.toml"), root / "kits")
    return root / "kits" / "sites" / "hospital-a"


def _kit_copy(site_kit: Path, tmp_path: Path) -> Path:
    kit = tmp_path / "kit"
    shutil.copytree(site_kit, kit)
    return kit


def _kit_json_with(kit: Path, **changes: object) -> None:
    raw = json.loads((kit / "kit.json").read_text(encoding="utf-8"))
    raw.update(changes)
    (kit / "kit.json").write_text(json.dumps(raw), encoding="utf-8")


@pytest.mark.parametrize(("mutate", "match"), [
    pytest.param(lambda kit: (kit / "kit.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff"),
                 r"kit.json: cannot read it as JSON", id="garbage-kit-json"),
    pytest.param(lambda kit: (kit / "kit.json").write_text("[1, 2, 3]"), r"kit.json: invalid kit \(<top>: Input should be",
                 id="kit-json-list"),
    pytest.param(lambda kit: (kit / "kit.json").write_text(DEEP_JSON), r"kit.json: cannot read it as JSON .*nested too deeply",
                 id="deep-kit-json"),
    pytest.param(lambda kit: (kit / "signing.pub").unlink(), r"signing.pub: missing \(kit.json names it\)",
                 id="missing-file"),
    pytest.param(lambda kit: _kit_json_with(kit, ca={"file": "../../../etc/passwd", "fingerprint": "sha256:" + "0" * 64}),
                 r"ca.file: .*must be a relative path inside the kit folder", id="path-escapes-kit"),
    pytest.param(lambda kit: (kit / "kit.json").unlink(), r"kit.json: not found; is .* a kit folder", id="no-kit-json"),
])
def test_a_bad_kit_is_refused_naming_the_file(site_kit: Path, tmp_path: Path, mutate: Callable[[Path], None],
                                              match: str) -> None:
    kit = _kit_copy(site_kit, tmp_path)
    load_kit(kit)  # intact before
    mutate(kit)
    with pytest.raises(KitError, match=match) as caught:
        load_kit(kit)
    assert str(kit) in str(caught.value)


@FAST
@given(blob=st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode())))
def test_random_kit_json_is_refused_with_kit_error(site_kit: Path, tmp_path: Path, blob: bytes) -> None:
    kit = tmp_path / "kit"
    if not kit.exists():  # hypothesis reuses tmp_path between examples
        _kit_copy(site_kit, tmp_path)
    (kit / "kit.json").write_bytes(blob)
    with pytest.raises(KitError, match="kit.json"):
        load_kit(kit)


def test_a_non_utf8_consortium_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "consortium.toml"
    path.write_bytes(CONSORTIUM.encode().replace(b'"c"', b'"H\xf4pitaux"'))
    with pytest.raises(ConsortiumFileError, match=r"consortium.toml: cannot read the consortium file"):
        load_consortium(path)


@FAST
@given(toml_ish(["consortium", "coordinator", "[sites]", "junk"],
                ["name", "host", "port", "control_port", "listen_host", "junk"]))
def test_random_toml_ish_consortium_files_are_refused_or_read(tmp_path: Path, text: str) -> None:
    path = tmp_path / "consortium.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_consortium(path)
    except ConsortiumFileError as error:
        assert str(path) in str(error)


# =========================================================================== the privacy ledger

LEDGER_ENTRY = LedgerEntry(study_id="s", round=1, noise_multiplier=1.0, sample_rate=0.1, steps=3, max_grad_norm=1.0,
                           unit="participant", delta=1e-5, recorded_at="2025-01-01T00:00:00+00:00")
LEDGER_LINE = json.dumps(LEDGER_ENTRY.model_dump(mode="json"), sort_keys=True)


@pytest.mark.parametrize(("tail", "match"), [
    pytest.param(LEDGER_LINE[:40].encode(), r"line 3 is unreadable \(Unterminated string", id="torn-last-line"),
    pytest.param(b'{"study_id": "caf\xe9"}\n', r"line 3 is not UTF-8 text", id="non-utf8"),
    pytest.param(DEEP_JSON.encode() + b"\n", r"line 3 is unreadable \(.*nested too deeply", id="deep-json"),
    pytest.param(LEDGER_LINE.replace('"noise_multiplier": 1.0', '"noise_multiplier": Infinity').encode() + b"\n",
                 r"(?s)line 3 is unreadable \(.*noise_multiplier.*finite number", id="sigma-infinity"),
    pytest.param(b"[1, 2]\n", r"(?s)line 3 is unreadable \(.*valid dictionary", id="json-list"),
    pytest.param(b"\x00\x00\x00\n", r"line 3 is unreadable", id="nul-bytes"),
])
def test_a_corrupt_ledger_is_refused_naming_the_line(tmp_path: Path, tail: bytes, match: str) -> None:
    path = tmp_path / "privacy-ledger.jsonl"
    path.write_bytes((LEDGER_LINE + "\n").encode() * 2 + tail)
    with pytest.raises(LedgerError, match=match) as caught:
        PrivacyLedger(path).entries()
    assert str(path) in str(caught.value) and "restore it from backup" in str(caught.value)


@FAST
@given(blob=st.binary(min_size=1, max_size=120))
def test_random_ledger_lines_are_refused_with_ledger_error(tmp_path: Path, blob: bytes) -> None:
    assume(blob.strip())
    path = tmp_path / "privacy-ledger.jsonl"
    path.write_bytes((LEDGER_LINE + "\n").encode() + blob)
    try:
        entries = PrivacyLedger(path).entries()
    except LedgerError as error:
        assert str(path) in str(error)
    else:  # only whitespace-padded or identical valid entries may load
        assert all(e == LEDGER_ENTRY for e in entries)


# =========================================================================== the coordinator checkpoint

CK_ARRAYS = {"head.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "lora_A": np.ones(4, dtype=np.float32)}


def _checkpoint(tmp_path: Path) -> Path:
    class Adam:
        m_t = {"head.weight": np.full((2, 3), 0.5, dtype=np.float32)}
        v_t = {"head.weight": np.full((2, 3), 0.25, dtype=np.float32)}

    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, study_id="s", study_digest="d", manifest_digest="m", completed_round=2,
                    rounds=[{"round": 1}, {"round": 2}], arrays=CK_ARRAYS, strategy=Adam())
    return directory


def _edit_state(directory: Path, **changes: object) -> None:
    state = json.loads((directory / "state.json").read_text())
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    (directory / "state.json").write_text(json.dumps(state))


def _garbage_arrays_rehashed(directory: Path) -> None:
    (directory / "arrays.safetensors").write_bytes(b"\xff" * 64)
    _edit_state(directory, arrays_sha256=hashlib.sha256(b"\xff" * 64).hexdigest())


def _changed_tensor(directory: Path) -> None:
    from safetensors.numpy import save_file

    save_file({**CK_ARRAYS, "head.weight": CK_ARRAYS["head.weight"] + 1}, str(directory / "arrays.safetensors"))


@pytest.mark.parametrize(("tamper", "match"), [
    pytest.param(lambda d: (d / "state.json").write_bytes(b"{not json"), r"state.json is unreadable", id="not-json"),
    pytest.param(lambda d: _edit_state(d, arrays_sha256=None), r"state.json is unreadable: .*arrays_sha256",
                 id="field-missing"),
    pytest.param(lambda d: _edit_state(d, arrays_sha256="0" * 64),
                 r"arrays.safetensors does not match .*state.json", id="hash-changed"),
    pytest.param(_changed_tensor, r"arrays.safetensors does not match .*state.json", id="tensor-changed"),
    pytest.param(lambda d: (d / "strategy.safetensors").unlink(), r"strategy.safetensors is missing or unreadable", id="file-missing"),
    pytest.param(_garbage_arrays_rehashed, r"arrays.safetensors cannot be read as safetensors", id="garbage-rehashed"),
    pytest.param(lambda d: _edit_state(d, python_random_state=[3, [1, 2], None]),
                 r"state.json is unreadable: .*python_random_state", id="rng-state-tampered"),
    pytest.param(lambda d: _edit_state(d, completed_round=-1), r"state.json is unreadable: .*completed_round",
                 id="negative-round"),
])
def test_a_tampered_checkpoint_is_refused_naming_the_file(tmp_path: Path, tamper: Callable[[Path], None],
                                                         match: str) -> None:
    directory = _checkpoint(tmp_path)
    load_checkpoint(directory, study_digest="d", manifest_digest="m")  # intact before
    tamper(directory)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(directory, study_digest="d", manifest_digest="m")


@FAST
@given(blob=st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode())))
def test_random_state_json_is_refused_with_checkpoint_error(tmp_path: Path, blob: bytes) -> None:
    directory = _checkpoint(tmp_path)
    (directory / "state.json").write_bytes(blob)
    with pytest.raises(CheckpointError, match=r"state.json"):
        load_checkpoint(directory, study_digest="d", manifest_digest="m")


# =========================================================================== received updates

MANIFEST = TensorManifest.describe({"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)})


@FAST
@given(state=st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.tuples(st.sampled_from([(2, 3), (3, 2), (4,), (6,), ()]),
              st.sampled_from(["float32", "float64", "float16", "int32"]),
              st.sampled_from([0.0, 1.0, np.nan, np.inf, -np.inf, 1e38])),
    max_size=3).filter(lambda s: all(v[2] in (0.0, 1.0) for v in s.values() if v[1] == "int32")))
def test_random_updates_pass_the_manifest_only_when_they_match_it(state: dict) -> None:
    arrays = {}
    for name, (shape, dtype, value) in state.items():
        array = np.zeros(shape, dtype=dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            array[...] = value
        arrays[name] = array
    matches = (set(arrays) == {"a", "b"} and all(
        arrays[t.name].shape == t.shape and str(arrays[t.name].dtype) == t.dtype and np.isfinite(arrays[t.name]).all()
        for t in MANIFEST.tensors))
    try:
        decode_arrays(encode_arrays(arrays), MANIFEST, source="update from fuzz-site")
    except ExchangeError as error:
        assert not matches and str(error).startswith("update from fuzz-site does not match the exchange manifest")
    else:
        assert matches


@dataclass(frozen=True)
class Hostile:
    """A hostile site: answers with a real site's reply, altered (``None``: no answer)."""

    name: str
    train: Callable | None = None
    evaluate: Callable | None = None


def _tensor(mutate: Callable[[np.ndarray], np.ndarray], which: int = 0) -> Callable:
    def alter(content) -> None:
        arrays = decode_arrays(content["arrays"])
        name = sorted(arrays)[which]
        arrays[name] = mutate(arrays[name])
        content["arrays"] = encode_arrays(arrays)
    return alter


def _arrays(mutate: Callable[[dict], None]) -> Callable:
    def alter(content) -> None:
        arrays = decode_arrays(content["arrays"])
        mutate(arrays)
        content["arrays"] = encode_arrays(arrays)
    return alter


def _raw_array(**fields: object) -> Callable:
    def alter(content) -> None:
        from flwr.app import Array

        name = sorted(content["arrays"].keys())[0]
        real = content["arrays"][name]
        content["arrays"][name] = Array(**{"dtype": real.dtype, "shape": real.shape, "stype": real.stype,
                                           "data": real.data, **fields})
    return alter


def _set(record: str, key: str, value: object) -> Callable:
    def alter(content) -> None:
        if value is None:
            del content[record][key]
        else:
            content[record][key] = value
    return alter


def _extra_record(content) -> None:
    from flwr.app import Array, ArrayRecord

    content["raw-windows"] = ArrayRecord({"x": Array(np.ones(3, np.float32))})


def _nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[0] = np.nan
    return a


def _inf(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[-1] = np.inf
    return a


HOSTILE = [  # (hostile site, what the round's failures must say about it)
    (Hostile("evil-nan", train=_tensor(_nan)), r"evil-nan: update rejected: .*: contains NaN or Inf"),
    (Hostile("evil-inf", train=_tensor(_inf, which=1)), r"evil-inf: update rejected: .*: contains NaN or Inf"),
    (Hostile("evil-far", train=_tensor(lambda a: a + 1e4)),
     r"evil-far: update rejected: its distance from the global model is .* above max_update_norm 1000"),
    (Hostile("evil-shape", train=_tensor(lambda a: a.reshape(-1))), r"evil-shape: update rejected: .*: shape \(\d+,\), expected"),
    (Hostile("evil-dtype", train=_tensor(lambda a: a.astype(np.float64))),
     r"evil-dtype: update rejected: .*: dtype float64, expected float32"),
    (Hostile("evil-extra", train=_arrays(lambda s: s.update({"backdoor.weight": np.ones(3, np.float32)}))),
     r"evil-extra: update rejected: .*unexpected tensors: \['backdoor.weight'\]"),
    (Hostile("evil-missing", train=_arrays(lambda s: s.pop(sorted(s)[0]))), r"evil-missing: update rejected: .*missing tensors: \["),
    (Hostile("evil-digest", train=_set("site", "manifest-sha256", "0" * 64)),
     r"evil-digest: update rejected: it was trained for another model \(manifest 000000000000…"),
    (Hostile("evil-bytes", train=_raw_array(data=b"\x93NUMPY garbage")),
     r"evil-bytes: update rejected: update from evil-bytes: tensor .* cannot be decoded"),
    (Hostile("evil-stype", train=_raw_array(stype="torch.Tensor")),
     r"evil-stype: update rejected: update from evil-stype: tensor .* cannot be decoded"),
    (Hostile("evil-no-weight", train=_set("metrics", "num-examples", None)),
     r"evil-no-weight: update rejected: metrics .*lack \['num-examples'\]"),
    (Hostile("evil-leak", train=_set("metrics", "participant-ids", [1, 2, 3])),
     r"evil-leak: update rejected: metrics .*unexpected \['participant-ids'\]"),
    (Hostile("evil-weight", train=_set("metrics", "num-examples", -5)),
     r"evil-weight: update rejected: num-examples is -5"),
    (Hostile("evil-record", train=_extra_record), r"evil-record: update rejected: .*unexpected record\(s\) \['raw-windows'\]"),
    (Hostile("evil-eval-shape", evaluate=_set("metrics", "window-confusion", [1, 2, 3])),
     r"evil-eval-shape: evaluation rejected: window-confusion .*not a 2 x 2"),
    (Hostile("evil-eval-negative", evaluate=_set("metrics", "participant-confusion", [5, -9, 0, 1])),
     r"evil-eval-negative: evaluation rejected: participant-confusion .*negative"),
    (Hostile("evil-eval-missing", evaluate=_set("metrics", "window-confusion", None)),
     r"evil-eval-missing: evaluation rejected: .*window-confusion"),
]


class TamperingGrid:
    """Real sites (the real ClientApp, in-process; an exception becomes an error reply, as
    Flower's runtime makes it) plus :class:`Hostile` sites that answer with the first real
    site's reply, altered on its way to the coordinator."""

    def __init__(self, site_configs: dict[int, Path], hostile: list[Hostile]) -> None:
        from inprocess_grid import InProcessGrid

        self.contexts = InProcessGrid(site_configs).contexts
        self.hostile = {node: h for node, h in enumerate(hostile, start=max(site_configs) + 1)}
        self.replies: list[list] = []

    def get_node_ids(self) -> list[int]:
        return [*self.contexts, *self.hostile]

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list:
        from flwr.app import Error, Message

        from client.app import app as client_app

        messages, replies = list(messages), []
        for message in messages:
            context = self.contexts.get(message.metadata.dst_node_id)
            if context is not None:
                try:
                    replies.append(client_app(copy.deepcopy(message), context))
                except Exception as error:  # what flwr's run_clientapp sends back
                    reason = str(type(error)) + ":<'" + str(error) + "'>"
                    replies.append(Message(Error(code=2, reason=reason), reply_to=message))
        honest = next(r for r in replies if not r.has_error())
        for message in messages:
            hostile = self.hostile.get(message.metadata.dst_node_id)
            alter = None if hostile is None else hostile.train if message.metadata.message_type == "train" \
                else hostile.evaluate
            if alter is None:
                continue  # not hostile, or silent for this kind of message
            reply = Message(content=copy.deepcopy(honest.content), reply_to=message)
            reply.content["site"]["name"] = hostile.name
            alter(reply.content)
            replies.append(reply)
        self.replies.append(replies)
        return replies


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, data_consortium):
    from flwr.app import ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity
    from sites import small_cohort, write_site_config

    from fedneuro.models.exchange import exchange_manifest, trainable_state
    from fedneuro.study import default_study_path
    from fedneuro.training.site import build_study_model

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    base = load_study(default_study_path())
    study = small_cohort(base.model_copy(update={"model": base.model.model_copy(update={"backbone": "biot-tiny"})}))
    root = tmp_path_factory.mktemp("federation")
    sites = list(data_consortium.items())[:2]
    configs = {node: write_site_config(root, name, data, noise_seed=node) for node, (name, data) in enumerate(sites, 1)}
    # Node 3: hospital-a again, from another state folder whose privacy ledger is torn.
    configs[3] = write_site_config(root / "torn", sites[0][0], sites[0][1], noise_seed=3)
    (root / "torn" / sites[0][0] / "privacy-ledger.jsonl").write_bytes(b'{"study_id": "demo", "round": 1, "ste')
    model = build_study_model(study)
    manifest = exchange_manifest(model)
    kwargs = dict(initial_arrays=encode_arrays(trainable_state(model.module)), manifest=manifest,
                  base_config=ConfigRecord({"study": study.to_json(), "manifest": manifest.to_json()}),
                  rounds=1, connect_timeout_s=1.0, round_timeout_s=60.0)
    return configs, kwargs


def _fedavg(n: int):
    from flwr.serverapp.strategy import FedAvg

    return FedAvg(min_train_nodes=n, min_evaluate_nodes=n, min_available_nodes=n)


def test_hostile_updates_are_rejected_by_name_and_the_round_goes_on(federation) -> None:
    from fedneuro.federation.rounds import run_rounds

    configs, kwargs = federation
    grid = TamperingGrid(configs, [h for h, _ in HOSTILE])
    reports = []
    final = run_rounds(grid, _fedavg(len(grid.get_node_ids())), on_round_end=lambda r, a: reports.append(r),
                       min_sites=2, max_update_norm=1e3, **kwargs)
    (report,) = reports
    failures = "\n".join(report.failures)
    assert len(report.failures) == len(HOSTILE) + 1, failures
    assert re.search(r"node-3: train failed: .*privacy ledger .*torn.*privacy-ledger.jsonl, line 1 is "
                                   r"unreadable", failures), failures
    for _, words in HOSTILE:
        assert re.search(words, failures), f"{words!r} not in:\n{failures}"
    # The aggregate is the weighted mean of the two honest updates: nothing hostile got in.
    honest = [r for r in grid.replies[0] if not r.has_error() and r.content["site"]["name"] in ("hospital-a", "hospital-b")]
    assert len(honest) == 2
    weights = [r.content["metrics"]["num-examples"] for r in honest]
    updates = [decode_arrays(r.content["arrays"]) for r in honest]
    expected = {k: sum(u[k] * w for u, w in zip(updates, weights)) / sum(weights) for k in updates[0]}
    got = decode_arrays(final)
    assert all(np.allclose(got[k], expected[k], atol=1e-6) for k in expected)
    assert set(report.sites) == {"hospital-a", "hospital-b"}
    assert all(s.test_windows > 0 for s in report.sites.values())


def test_too_few_valid_updates_fail_the_round_loudly_naming_each_site(federation) -> None:
    from fedneuro.federation.rounds import FederationError, run_rounds

    configs, kwargs = federation
    grid = TamperingGrid({1: configs[1]}, [HOSTILE[0][0], HOSTILE[7][0]])
    with pytest.raises(FederationError, match=r"round 1: only 1 of the 2 required sites returned a valid update; "
                                              r"failures: \[") as caught:
        run_rounds(grid, _fedavg(3), on_round_end=lambda r, a: None, min_sites=2, **kwargs)
    for words in (HOSTILE[0][1], HOSTILE[7][1]):  # in the order the strategy sampled the sites
        assert re.search(words, str(caught.value)), f"{words!r} not in {caught.value}"


# =========================================================================== EEG and MRI files


def _edf_header(fields: dict[str, bytes]) -> bytes:
    head = bytearray(b" " * 256)
    head[0:8] = b"0       "
    for (start, width), value in zip([(184, 8), (236, 8), (244, 8), (252, 4)], fields.values()):
        head[start:start + width] = value[:width].ljust(width)
    return bytes(head)


_EDF_FIELD = st.one_of(st.integers(-5, 10**9).map(lambda n: str(n).encode()), st.binary(max_size=8),
                       st.sampled_from([b"1e308", b"nan", b"inf", b"-0", b"0x10", b"1_000"]))


@FAST
@given(fields=st.fixed_dictionaries({"header": _EDF_FIELD, "records": _EDF_FIELD, "duration": _EDF_FIELD,
                                     "signals": st.one_of(_EDF_FIELD, st.integers(1, 4).map(lambda n: str(n).encode()))}),
       tail=st.binary(max_size=1200))
def test_random_edf_headers_fail_only_with_recording_read_error(tmp_path: Path, fields: dict, tail: bytes) -> None:
    path = tmp_path / "fuzz.edf"
    path.write_bytes(_edf_header(fields) + tail)
    try:
        preflight(path, "EDF")
    except RecordingReadError as error:
        assert str(error).startswith("fuzz.edf")


_VHDR_LINES = st.one_of(
    st.sampled_from(["[Common Infos]", "[Binary Infos]", "[Channel Infos]", "DataFile=fuzz.eeg", "MarkerFile=fuzz.vmrk",
                     "DataFile=", "DataFile=../../etc/passwd", "DataFormat=ASCII", "BinaryFormat=IEEE_FLOAT_64",
                     "NumberOfChannels=2", "NumberOfChannels=-1", "NumberOfChannels=1e9", "SamplingInterval=0",
                     "SamplingInterval=nan", "SamplingInterval=inf", "SamplingInterval=4000", "Ch1=Fp1,,0.1,µV",
                     "Ch2=Fp1,,0.1,µV", "Ch2=Fp2", "[Comment]", "%%%", "= = ="]),
    st.text(max_size=20),
)


@FAST
@given(lines=st.lists(_VHDR_LINES, max_size=12), data=st.binary(max_size=40))
def test_random_brainvision_headers_fail_only_with_recording_read_error(tmp_path: Path, lines: list[str],
                                                                      data: bytes) -> None:
    (tmp_path / "fuzz.eeg").write_bytes(data)
    (tmp_path / "fuzz.vmrk").write_text("Brain Vision Data Exchange Marker File, Version 1.0\n[Marker Infos]\n"
                                        "Mk1=Stimulus,S1,0,1,0\n", encoding="utf-8")
    path = tmp_path / "fuzz.vhdr"
    path.write_text("Brain Vision Data Exchange Header File Version 1.0\n" + "\n".join(lines) + "\n", encoding="utf-8")
    try:
        preflight(path, "BrainVision")
    except RecordingReadError as error:
        assert "fuzz." in str(error)


@pytest.fixture(scope="module")
def nifti_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import nibabel as nib

    path = tmp_path_factory.mktemp("nifti") / "sub-01_T1w.nii"
    image = nib.Nifti1Image(np.random.default_rng(0).random((6, 7, 5), dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(image, path)
    return path.read_bytes()


@FAST
@given(edits=st.lists(st.tuples(st.integers(0, 351), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4))
def test_mutated_nifti_headers_fail_only_with_mri_file_error(tmp_path: Path, nifti_bytes: bytes,
                                                           edits: list[tuple[int, bytes]]) -> None:
    from fedneuro.data.mri_read import MRIFileError, read_nifti

    blob = bytearray(nifti_bytes)
    for at, value in edits:
        blob[at:at + len(value)] = value
    path = tmp_path / "sub-01_T1w.nii"
    path.write_bytes(bytes(blob[:len(nifti_bytes)]))
    try:
        read_nifti(path, suffix="T1w")
    except MRIFileError as error:
        assert str(error).startswith(str(path))


def test_a_nifti_declaring_a_huge_volume_is_refused_not_allocated(tmp_path: Path, nifti_bytes: bytes) -> None:
    from fedneuro.data.mri_read import MRIFileError, read_nifti

    blob = bytearray(nifti_bytes)
    struct.pack_into("<hhh", blob, 42, 32767, 32767, 32767)  # dim[1:4]
    path = tmp_path / "sub-01_T1w.nii"
    path.write_bytes(bytes(blob))
    with pytest.raises(MRIFileError, match=r"sub-01_T1w.nii: "):
        read_nifti(path, suffix="T1w")
    assert os.path.getsize(path) == len(nifti_bytes)
