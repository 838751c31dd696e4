"""`fedneuro report`: the ethics-board report of a run, built from real ledgers, consents, keys and logs.

The run folder is made with the library's own writers (StudyRecord, PrivacyLedger, consent
import from a synthetic participants.tsv, AuditLog with a generated key), so the report is
checked against the files a real run leaves. The browser test renders report.html in
headless Chromium (skipped when no chromium binary is installed).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import os
import re
import shutil
import subprocess
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedneuro.cli.main import app
from fedneuro.governance.keys import fingerprint, generate_signing_key, load_signing_key, write_signing_key
from fedneuro.privacy.accountant import compute_epsilon
from fedneuro.privacy.ledger import LedgerEntry, PrivacyLedger
from fedneuro.reporting.render import SECTION_IDS
from fedneuro.study import Study, load_study

runner = CliRunner()
ON = date(2025, 6, 1)
T0 = datetime(2025, 5, 1, 9, 0, tzinfo=timezone.utc)
STUDY_ID = "report-test"
SIGMA, CLIP, DELTA = 1.1, 0.8, 1e-5
# hospital-a: round 2 took steps at two sampling rates (a site whose cohort changed mid-round).
LEDGER_A = [(1, 0.25, 8), (2, 0.25, 5), (2, 0.3, 3), (3, 0.3, 8)]
LEDGER_B = [(1, 0.2, 10), (2, 0.2, 10), (3, 0.2, 10)]
TOP_LEVEL = ["format_version", "fedneuro_version", "generated_at", "run_dir", "study", "run", "trust_model", "sites",
             "metrics", "audit_logs", "approvals", "findings", "problems", "inputs"]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
APT_HINT = "apt-get install -y chromium"


# --------------------------------------------------------------------------- a run folder
def _study_toml() -> str:
    text = f"""
[study]
id = "{STUDY_ID}"
title = "Report test: abnormal EEG at three hospitals"
seed = 3

[model]
backbone = "biot-tiny"

[privacy]
noise_multiplier = {SIGMA}
max_grad_norm = {CLIP}
max_windows_per_participant = 4
accountant = "rdp"

[federation]
rounds = 3
max_update_norm = 5.0

[federation.secure_aggregation]
enabled = true
"""
    if "governance" in Study.model_fields:  # the [governance] section, where this fedneuro has it
        text += """
[governance]
requesting_institution = "Report test consortium"
max_epsilon = 8.0
min_cohort = 10
min_participants_per_metric = 5
allowed_outputs = ["adapter-tensors", "aggregate-metrics"]

[governance.purpose]
permission = "HMB"
not_for_profit = true
"""
    return text


def _eps(history: list[tuple[int, float, int]]) -> float:
    """ε the way a site computes it: the whole, unmerged ledger history."""
    return _eps_of(tuple(history))


@functools.cache
def _eps_of(history: tuple[tuple[int, float, int], ...]) -> float:
    return compute_epsilon([(SIGMA, q, n) for _, q, n in history], delta=DELTA, accountant="rdp").epsilon


def _ledger(path: Path, entries: list[tuple[int, float, int]]) -> None:
    PrivacyLedger(path).append([
        LedgerEntry(study_id=STUDY_ID, round=r, noise_multiplier=SIGMA, sample_rate=q, steps=n, max_grad_norm=CLIP,
                    unit="participant", max_windows_per_unit=4, delta=DELTA, recorded_at=(T0 + timedelta(hours=r)).isoformat())
        for r, q, n in entries
    ])


def _summary(run: Path, study: Study) -> None:
    from fedneuro.federation.results import StudyRecord
    from fedneuro.federation.rounds import RoundReport, SiteRoundReport

    record = StudyRecord(run, header={
        "study_id": STUDY_ID, "study_digest": study.digest(), "backbone": study.model.backbone, "weights_sha256": None,
        "adapter": study.model.adapter.model_dump(mode="json"), "adapter_bytes": 38568, "backbone_bytes": 429832,
        "privacy_labels": {"unit": "participant", "neighbouring_relation": study.privacy.neighbouring_relation(),
                           "max_windows_per_participant": 4, "noise_multiplier": SIGMA, "max_grad_norm": CLIP},
    })
    accuracy = {1: (0.61, 0.55, 0.58), 2: (0.78, 0.74, 0.7), 3: (0.9, 0.86, 0.81)}
    for r in (1, 2, 3):
        eps_a = _eps([e for e in LEDGER_A if e[0] <= r])
        eps_b = _eps([e for e in LEDGER_B if e[0] <= r]) * (0.5 if r == 3 else 1.0)  # b under-reports round 3
        sites = {
            "hospital-a": SiteRoundReport("hospital-a", 120, 28, eps_a, DELTA, "rdp", 8, 0.6, 42782, accuracy[r][0], 50, 12),
            "hospital-b": SiteRoundReport("hospital-b", 100, 30, eps_b, DELTA, "rdp", 10, 0.7, 42782, accuracy[r][1], 44, 13),
            "hospital-c": SiteRoundReport("hospital-c", 90, 25, 1.0 + r, DELTA, "rdp", 8, 0.8, 42782, accuracy[r][2], 40, 11),
        }
        record.add(RoundReport(round=r, sites=sites, balanced_accuracy=sum(accuracy[r]) / 3,
                               participant_balanced_accuracy=min(1.0, sum(accuracy[r]) / 3 + 0.03), wall_time_s=12.0))
    record.write(status="completed", wall_time_s=36.0)


def _approval(path: Path, key: Any, study: Study) -> None:
    """A signed decision in `fedneuro site approve`'s format when this fedneuro has it, else a plain one."""
    try:
        from fedneuro.governance.plan import Approval, code_identity
    except ImportError:
        path.write_text(json.dumps({"decision": "approve", "signer": fingerprint(key), "study_digest": study.digest(),
                                    "signed_at": "2025-04-30T10:00:00Z", "signature": "-"}))
        return
    from fedneuro.governance.keys import sign

    unsigned = Approval(plan_hash="a" * 64, decision="approve", reason="committee decision EA-17", study_id=STUDY_ID,
                        study_digest=study.digest(), code_identity=code_identity(), weights_sha256="random-init",
                        signer=fingerprint(key), signed_at="2025-04-30T10:00:00Z", signature="-")
    signature = base64.b64encode(sign(key, unsigned.signed_message())).decode()
    path.write_text(unsigned.model_copy(update={"signature": signature}).model_dump_json(indent=2))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from fedneuro.data.synth import DEFAULT_PROFILES, synthesize_site
    from fedneuro.federation.launch import Launch, write_launch
    from fedneuro.governance.audit import AuditLog
    from fedneuro.governance.consent import import_consent_file
    from fedneuro.governance.site import SiteConfig

    base = tmp_path_factory.mktemp("report")
    run = base / "run"
    sites = run / "sites"
    (run / "study.toml").parent.mkdir(parents=True)
    (run / "study.toml").write_text(_study_toml())
    study = load_study(run / "study.toml")
    _summary(run, study)
    data_a = synthesize_site(base / "data", DEFAULT_PROFILES[0], n_participants=40, duration_s=10.0, seed=5,
                             layout="loose", format="FIF")
    write_launch(Launch(study_path=run / "study.toml", out_dir=run, sites=[
        SiteConfig(name="hospital-a", bids_root=data_a, state_dir=sites / "hospital-a", noise_seed=11),
        SiteConfig(name="hospital-b", bids_root=base / "elsewhere", state_dir=sites / "hospital-b", noise_seed=12),
    ]), run / "launch.json")

    # hospital-a: ledger, consents imported from its participants.tsv, an intact audit log with its key beside it
    _ledger(sites / "hospital-a" / "privacy-ledger.jsonl", LEDGER_A)
    import_consent_file(sites / "hospital-a", data_a / "participants.tsv")
    key_a = generate_signing_key()
    write_signing_key(base / "keys" / "hospital-a.key", key_a, sites / "hospital-a" / "hospital-a.pub")
    log_a = AuditLog(sites / "hospital-a" / "hospital-a.audit.jsonl", key_a, actor="hospital-a")
    for r in (1, 2, 3):
        log_a.append("round-trained", {"round": r, "study_id": STUDY_ID}, now=T0 + timedelta(hours=r))
    (sites / "hospital-a" / "approvals").mkdir()
    _approval(sites / "hospital-a" / "approvals" / "plan.json", key_a, study)

    # hospital-b: ledger (its summary under-reports ε), a corrupt registry, an edited audit log, key given by --pubkey
    _ledger(sites / "hospital-b" / "privacy-ledger.jsonl", LEDGER_B)
    (sites / "hospital-b" / "consent.json").write_text('{"format_version": 1, "records": [{"participant_id": ')
    pub_b = write_signing_key(base / "keys" / "hospital-b.key", generate_signing_key())
    log_b = AuditLog(sites / "hospital-b" / "hospital-b.audit.jsonl", load_signing_key(base / "keys" / "hospital-b.key"),
                     actor="hospital-b")
    for r in (1, 2):
        log_b.append("round-trained", {"round": r, "epsilon": 0.5 * r}, now=T0 + timedelta(hours=r))
    lines = log_b.path.read_text().splitlines()
    lines[0] = lines[0].replace('"epsilon":0.5', '"epsilon":0.1')
    log_b.path.write_text("\n".join(lines) + "\n")

    # hospital-c: in the summary only (no state folder); hospital-d: a state folder with a torn ledger
    (sites / "hospital-d").mkdir(parents=True)
    (sites / "hospital-d" / "privacy-ledger.jsonl").write_text('{"study_id": "report-test", "round": 1, "noise_mul')
    return {"run": run, "study": study, "data_a": data_a, "key_a": key_a, "pub_b": pub_b, "base": base}


@pytest.fixture(scope="module")
def written(run_dir: dict[str, Any]) -> dict[str, Any]:
    """The report of the run, made from its folder as a user would: relative paths, --pubkey for one log."""
    base = run_dir["base"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        result = runner.invoke(app, ["report", "run", "--out", "out", "--date", str(ON),
                                     "--pubkey", f"hospital-b={run_dir['pub_b'].relative_to(base)}", "--json"])
    assert result.exit_code == 0, result.output
    out = base / "out"
    return {"out": out, "stdout": result.stdout, "report": json.loads((out / "report.json").read_text())}


def _site(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["sites"] if s["name"] == name)


# --------------------------------------------------------------------------- JSON content
def test_report_json_has_every_section_and_matches_stdout(written: dict[str, Any]) -> None:
    report = written["report"]
    assert list(report) == TOP_LEVEL
    assert json.loads(written["stdout"]) == report
    assert [s["name"] for s in report["sites"]] == ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
    assert report["run"]["status"] == "completed" and report["run"]["rounds_completed"] == 3
    assert report["study"]["id"] == STUDY_ID and report["study"]["digest_matches_run"] is True
    assert [m["round"] for m in report["metrics"]["rounds"]] == [1, 2, 3]
    assert report["metrics"]["rounds"][2]["sites"]["hospital-a"] == pytest.approx(0.9)


def test_epsilon_is_recomputed_per_round_from_the_ledger(written: dict[str, Any]) -> None:
    privacy = _site(written["report"], "hospital-a")["privacy"]
    assert privacy["epsilon_source"] == "recomputed from the privacy ledger"
    assert privacy["epsilon"] == pytest.approx(_eps(LEDGER_A), rel=1e-9)
    assert privacy["epsilon_matches"] is True and privacy["mismatches"] == []
    assert [(p["round"], p["steps"]) for p in privacy["per_round"]] == [(1, 8), (2, 8), (3, 8)]
    for point in privacy["per_round"]:
        assert point["epsilon"] == pytest.approx(_eps([e for e in LEDGER_A if e[0] <= point["round"]]), rel=1e-9)
        assert point["matches"] is True
    assert privacy["delta"] == DELTA and privacy["accountant"] == "rdp" and privacy["accountant_setting"] == "rdp"
    assert privacy["unit"] == "participant"
    assert privacy["neighbouring_relation"] == "add/remove all data of one participant"
    assert privacy["sampling"].startswith("Poisson sampling of participants")
    assert privacy["sample_rates"] == [0.25, 0.3] and privacy["noise_multipliers"] == [SIGMA]
    assert privacy["max_grad_norms"] == [CLIP] and privacy["max_windows_per_unit"] == [4]
    assert (privacy["steps"], privacy["steps_reported"], privacy["rounds_taken"]) == (24, 24, 3)
    assert privacy["training_participants"] == 28 and privacy["budget"] == 10.0


def test_a_misreported_epsilon_is_flagged(written: dict[str, Any]) -> None:
    report = written["report"]
    privacy = _site(report, "hospital-b")["privacy"]
    true_eps = _eps(LEDGER_B)
    assert privacy["epsilon"] == pytest.approx(true_eps, rel=1e-9)
    assert privacy["epsilon_reported"] == pytest.approx(true_eps / 2)
    assert privacy["epsilon_matches"] is False
    assert [p["matches"] for p in privacy["per_round"]] == [True, True, False]
    message = f"hospital-b: ε recomputed from the ledger is {true_eps:.4f}, summary.json reports {true_eps / 2:.4f}"
    assert message in [f["message"] for f in report["findings"]]


def test_missing_and_corrupt_inputs_are_named(written: dict[str, Any]) -> None:
    report = written["report"]
    c = _site(report, "hospital-c")
    assert c["state_dir"] is None
    assert c["privacy"]["epsilon_source"] == "reported in summary.json" and c["privacy"]["epsilon"] == 4.0
    assert c["consent"] == {"available": False,
                            "reason": "no consent registry: no state folder for hospital-c in the run folder"}
    problems = {p["path"]: p["problem"] for p in report["problems"]}
    assert re.search(r"not a valid consent registry .*Restore it from backup", problems["sites/hospital-b/consent.json"])
    assert _site(report, "hospital-b")["consent"]["reason"].startswith("sites/hospital-b/consent.json is corrupt: ")
    assert "line 1 is unreadable" in problems["sites/hospital-d/privacy-ledger.jsonl"]
    assert _site(report, "hospital-d")["privacy"]["reason"].startswith("sites/hospital-d/privacy-ledger.jsonl is corrupt")
    assert _site(report, "hospital-a")["consent"]["available"] is True
    for site in report["sites"]:
        assert site["membership_audit"] == {
            "available": False, "reason": "not run (summary.json holds no audit; `fedneuro report --audit` runs one)"}
    statuses = {f["path"]: f["status"] for f in report["inputs"]}
    assert statuses["summary.json"] == "read" and statuses["sites/hospital-b/consent.json"] == "corrupt"


def test_consent_coverage_is_the_registry_against_the_purpose(written: dict[str, Any], run_dir: dict[str, Any]) -> None:
    import csv

    from fedneuro.governance.consent import eligibility, load_registry, summarize
    from fedneuro.reporting.ethics import parse_purpose, study_purpose

    consent = _site(written["report"], "hospital-a")["consent"]
    purpose = study_purpose(run_dir["study"])
    registry = load_registry(run_dir["run"] / "sites" / "hospital-a")
    with (run_dir["data_a"] / "participants.tsv").open(encoding="utf-8") as handle:
        ids = {row["participant_id"] for row in csv.DictReader(handle, delimiter="\t")}
    assert len(ids) == 40 and consent["participants"] == 40 and consent["records"] == len(registry.records) < 40
    if purpose is None:  # a fedneuro without [governance]: consent in force only
        assert consent["purpose"] is None and "DUO coverage not evaluated" in consent["coverage"]
        purpose = parse_purpose("HMB")
        in_force = summarize(eligibility(registry, purpose, ON, participant_ids=ids))
        assert consent["eligible"] >= in_force.eligible
        return
    expected = summarize(eligibility(registry, purpose, ON, participant_ids=ids))
    assert consent["purpose_source"] == "the study" and consent["date"] == str(ON)
    assert (consent["eligible"], consent["ineligible"]) == (expected.eligible, expected.ineligible)
    assert consent["reasons"] == expected.reasons
    assert {"no consent", "withdrawn"} <= set(consent["reasons"])


def test_audit_logs_and_approvals_are_verified(written: dict[str, Any], run_dir: dict[str, Any]) -> None:
    report = written["report"]
    logs = {log["site"]: log for log in report["audit_logs"]["logs"]}
    assert logs["hospital-a"]["ok"] is True and logs["hospital-a"]["entries"] == 3
    assert logs["hospital-a"]["key_fingerprint"] == fingerprint(run_dir["key_a"])
    assert logs["hospital-a"]["key_source"].startswith("beside the log")
    assert logs["hospital-b"]["ok"] is False and logs["hospital-b"]["key_source"].startswith("--pubkey hospital-b")
    assert [(p["line"], p["kind"]) for p in logs["hospital-b"]["problems"]] == [(1, "edited")]
    [approval] = report["approvals"]["approvals"]
    assert approval["site"] == "hospital-a" and approval["decision"] == "approve"
    assert approval["signer_fingerprint"] == fingerprint(run_dir["key_a"]) and approval["digest_matches_run"] is True
    try:
        import fedneuro.governance.plan  # noqa: F401
    except ImportError:
        assert approval["signature"].startswith("present, not verified")
    else:
        assert approval["signature"] == "valid (Ed25519, key from sites/hospital-a/hospital-a.pub)"


def test_trust_model_follows_the_study(written: dict[str, Any]) -> None:
    trust = written["report"]["trust_model"]
    assert trust["secure_aggregation"] is True
    assert trust["coordinator_sees"][0].startswith("only the weighted mean")
    assert "any one site's adapter update" in trust["coordinator_cannot_see"]
    assert any(n.startswith("Simulation: DP noise seeds") for n in trust["notes"])


def test_an_empty_or_broken_folder_still_gives_a_report(tmp_path: Path) -> None:
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["run"] == {"available": False, "reason": "no run summary at summary.json"}
    assert report["study"]["reason"].startswith("no study file: pass --study STUDY.toml")
    assert report["trust_model"]["available"] is False and report["sites"] == []
    assert report["audit_logs"]["reason"].startswith("no audit log") and report["approvals"]["reason"].startswith("no approvals")
    html_text = (out / "report.html").read_text()
    assert "not available: no run summary at summary.json" in html_text

    (empty / "summary.json").write_text("{not json")
    report = json.loads(runner.invoke(app, ["report", str(empty), "--out", str(out), "--json"]).stdout)
    assert report["problems"] == [{"path": "summary.json", "problem": "not valid JSON (line 1, column 2: "
                                   "Expecting property name enclosed in double quotes)"}]


def test_audit_option_runs_the_membership_audit_where_the_data_is(run_dir: dict[str, Any], tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from fedneuro.models.exchange import trainable_state
    from fedneuro.training.site import build_study_model

    run = tmp_path / "run"
    shutil.copytree(run_dir["run"], run)
    save_file(trainable_state(build_study_model(run_dir["study"]).module), str(run / "global_adapter.safetensors"))
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "out"), "--date", str(ON), "--audit", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    audit = _site(report, "hospital-a")["membership_audit"]
    assert audit["source"] == "--audit (run for this report)" and audit["attack"] == "loss-threshold"
    assert audit["n_members"] > 0 and audit["n_nonmembers"] > 0
    assert audit["ci_low"] <= audit["auc"] <= audit["ci_high"] and audit["ci_low"] < 0.5 < audit["ci_high"]  # untrained
    for name in ("hospital-b", "hospital-c"):
        assert _site(report, name)["membership_audit"] == {
            "available": False, "reason": f"--audit needs {name}'s data, which launch.json does not locate on this machine"}


def test_membership_audit_recorded_in_the_summary_is_reported(run_dir: dict[str, Any], tmp_path: Path) -> None:
    from fedneuro.privacy.audit import loss_threshold_audit
    from fedneuro.reporting.ethics import collect_report

    run = tmp_path / "run"
    shutil.copytree(run_dir["run"], run)
    summary = json.loads((run / "summary.json").read_text())
    audit = loss_threshold_audit([0.2, 0.4, 0.5, 0.3], [0.6, 0.5, 0.9, 0.7], n_bootstrap=200)
    summary["sites"]["hospital-a"]["membership_audit"] = audit.model_dump()
    summary["membership_audit"] = {"hospital-b": {"attack": "loss-threshold", "auc": "high"}}
    (run / "summary.json").write_text(json.dumps(summary))
    report = collect_report(run, on=ON)
    a, b = (next(s for s in report.sites if s.name == n).membership_audit for n in ("hospital-a", "hospital-b"))
    assert a.available and (a.source, a.auc, a.ci_low, a.ci_high, a.n_members) == (
        "summary.json", audit.auc, audit.ci_low, audit.ci_high, 4)
    assert not b.available and b.reason.startswith("summary.json's membership audit for hospital-b is malformed (auc: ")


def test_logs_and_keys_in_the_audit_folder_are_found(run_dir: dict[str, Any], tmp_path: Path) -> None:
    from fedneuro.reporting.ethics import collect_report

    run = tmp_path / "run"
    shutil.copytree(run_dir["run"], run)
    (run / "audit").mkdir()
    for name in ("hospital-a.audit.jsonl", "hospital-a.audit.jsonl.head", "hospital-a.pub"):
        (run / "sites" / "hospital-a" / name).rename(run / "audit" / name)
    report = collect_report(run, on=ON)
    assert report.audit_logs.available
    log = next(log for log in report.audit_logs.logs if log.log == "audit/hospital-a.audit.jsonl")
    assert (log.site, log.ok, log.public_key) == ("hospital-a", True, "audit/hospital-a.pub")
    [approval] = report.approvals.approvals
    assert approval.signature.startswith(("valid (Ed25519, key from audit/hospital-a.pub)", "present, not verified"))


@pytest.mark.parametrize(("args", "message"), [
    (["--pubkey", "hospital-a"], r"Invalid value for '--pubkey': 'hospital-a'. Use SITE=KEY.pub"),
    (["--purpose", "XYZ"], r"Invalid value for '--purpose': 'XYZ'. Use GRU, HMB, POA or DS:<disease id>"),
    (["--date", "1/6/2025"], r"Invalid value for '--date': '1/6/2025'. Write the date as YYYY-MM-DD"),
])
def test_bad_options_name_the_fix(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and re.search(message, " ".join(result.output.split())), result.output
    missing = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert missing.exit_code == 2 and "nope is not a folder; give the --out folder" in " ".join(missing.output.split())


# --------------------------------------------------------------------------- HTML
class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.section_ids: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "section" and attr.get("id"):
            self.section_ids.append(attr["id"] or "")
        if tag == "img":
            self.images.append(attr.get("src") or "")
        if tag in {"script", "link", "iframe"} or (tag == "img" and not (attr.get("src") or "").startswith("data:")):
            self.external.append(tag)


def test_html_is_self_contained_with_every_section(written: dict[str, Any]) -> None:
    text = (written["out"] / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert tuple(page.section_ids) == SECTION_IDS
    assert page.external == []  # no script, stylesheet link, frame or remote image
    assert len(page.images) == 4
    for src in page.images:
        assert base64.b64decode(src.removeprefix("data:image/png;base64,"))[:8] == b"\x89PNG\r\n\x1a\n"
    report = written["report"]
    assert f"{_site(report, 'hospital-a')['privacy']['epsilon']:.4f}" in text
    assert "not available: no consent registry: no state folder for hospital-c in the run folder" in text
    assert "sites/hospital-b/consent.json" in text and "✗ differs" in text


# --------------------------------------------------------------------------- headless Chromium
_CHECK = """<script>window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "fedneuro-check";
  out.textContent = JSON.stringify({
    sections: [...document.querySelectorAll("section[id]")].map(s => [s.id, s.getBoundingClientRect().height]),
    images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
    styled: getComputedStyle(document.querySelector("header")).backgroundColor});
  document.body.appendChild(out);
});</script>"""
_CONSOLE = re.compile(r":CONSOLE[:(]|Uncaught")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--mute-audio", f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason=f"no chromium binary on PATH; install it with `{APT_HINT}` to render the report")
def test_report_renders_in_headless_chromium(written: dict[str, Any], tmp_path: Path) -> None:
    page = written["out"] / "report.html"
    # Console errors: Chromium logs every console message and uncaught error of the page to
    # stderr as "...:CONSOLE..." lines. First prove it does so in this build (a page that throws)...
    probe = tmp_path / "probe.html"
    probe.write_text("<!DOCTYPE html><html><body><script>throw new Error('probe-error')</script></body></html>")
    probed = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert re.search(r":CONSOLE.*Uncaught Error: probe-error", probed.stderr), probed.stderr[-2000:]
    # ...then the report must log nothing at all (it has no script).
    shot = tmp_path / "report.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if _CONSOLE.search(line)] == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1280
    assert int.from_bytes(png[20:24], "big") == 4000 and len(png) > 50_000

    # Rendered DOM: every section laid out, every plot decoded, the stylesheet applied.
    harness = tmp_path / "harness.html"
    harness.write_text(page.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"), encoding="utf-8")
    dom = _chromium(tmp_path, "--dump-dom", harness.as_uri())
    match = re.search(r'<pre id="fedneuro-check">(.*?)</pre>', dom.stdout, re.S)
    assert match, dom.stderr[-2000:]
    check = json.loads(html.unescape(match.group(1)))
    assert [s for s, _ in check["sections"]] == list(SECTION_IDS)
    assert all(height > 40 for _, height in check["sections"])
    assert check["images"] == [True] * 4
    assert check["styled"] == "rgb(34, 50, 74)"
    if os.environ.get("FEDNEURO_UPDATE_REPORT_EXAMPLE"):  # refresh the documentation's screenshot
        target = Path(__file__).resolve().parents[1] / "docs" / "images" / "report-example.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
