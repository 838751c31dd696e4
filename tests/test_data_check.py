"""`fedneuro data check` and `fedneuro synth eeg`: the site operator's report and CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedneuro.cli.main import app
from fedneuro.data import harmonise as harmonise_mod
from fedneuro.data.check import SiteCheck, check_site
from fedneuro.data.spec import DataSpec, InputContract

pytestmark = pytest.mark.filterwarnings("error")

runner = CliRunner()
STUDY = """
[study]
id = "check-test"
[data]
{data}
[model]
backbone = "biot-small"
"""
TOP_KEYS = [
    "classes", "contract", "label_source", "layout", "n_windows", "participants", "problems",
    "recordings", "root", "sampling_rates", "total_duration_s", "unusable_reasons", "usable",
]


def _study(tmp_path: Path, data: str = 'task = "rest"') -> Path:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(data=data), encoding="utf-8")
    return path


def test_check_reports_a_healthy_site(
    data_consortium: dict[str, Path], data_contract: InputContract, data_spec: DataSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[str] = []
    real = harmonise_mod.read_recording
    monkeypatch.setattr(harmonise_mod, "read_recording",
                        lambda ref: (opened.append(ref.participant_id), real(ref))[1])
    report = check_site(data_consortium["hospital-b"], data_spec, data_contract)
    assert isinstance(report, SiteCheck) and report.usable and not report.unusable_reasons
    assert report.layout == "bids" and report.sampling_rates == {"200": len(opened)}
    excluded = [p for p in report.participants if not p.eligible]
    assert excluded and all("consent" in p.excluded_reason for p in excluded)  # type: ignore[operator]
    assert not set(opened) & {p.participant_id for p in excluded}  # governance gate holds
    not_opened = [r for r in report.recordings if r.status == "not_opened"]
    assert {r.participant_id for r in not_opened} == {p.participant_id for p in excluded}
    ok = [r for r in report.recordings if r.status == "ok"]
    assert all(r.channels_missing == ["Fz", "Pz"] == r.channels_interpolated for r in ok)
    assert all(r.sfreq == 200.0 and r.duration_s == 20.0 for r in ok)
    assert [c.names for c in report.classes] == [["normal"], ["abnormal"]]
    assert sum(c.windows for c in report.classes) == report.n_windows > 0
    assert report.total_duration_s == 20.0 * len(ok) and not report.problems


def test_check_flags_a_missing_class_and_unknown_subjects(
    tmp_path: Path, data_consortium: dict[str, Path], data_contract: InputContract
) -> None:
    root = tmp_path / "site"
    shutil.copytree(data_consortium["hospital-a"], root)
    spec = DataSpec(classes={"normal": 0, "abnormal": 1, "unclear": 2})
    shutil.copytree(root / "sub-001", root / "sub-099")  # on disk, not in participants.tsv
    report = check_site(root, spec, data_contract)
    assert not report.usable
    assert report.unusable_reasons == ["class 2 ['unclear'] has no window"]
    assert any(p.file == "sub-099/" and "no row in participants.tsv" in p.reason
               for p in report.problems)


def test_cli_data_check_json_and_exit_codes(
    tmp_path: Path, data_consortium: dict[str, Path]
) -> None:
    root = data_consortium["hospital-c"]
    result = runner.invoke(app, ["data", "check", str(root), "--study", str(_study(tmp_path)),
                                 "--json", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(payload) == TOP_KEYS and payload["usable"] is True
    assert payload["contract"]["n_times"] == 800 and payload["sampling_rates"] == {"500": 10}
    assert sorted(payload["recordings"][0]) == sorted(
        ["file", "participant_id", "status", "reason", "sfreq", "duration_s", "channels_found",
         "channels_missing", "channels_interpolated", "channels_dropped", "windows",
         "windows_rejected", "events", "notes"])
    # Human output: tables and the verdict; a study needing an absent class exits 1.
    bad = _study(tmp_path, 'classes = { normal = 0, abnormal = 1, unclear = 2 }')
    result = runner.invoke(app, ["data", "check", str(root), "--study", str(bad),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1
    for text in ("Participants", "Recordings", "Label balance", "not usable",
                 "class 2 ['unclear'] has no window", "consent 'no'"):
        assert text in result.stdout, text
    # An unreadable study file is a usage error (exit 2), named.
    result = runner.invoke(app, ["data", "check", str(root), "--study", str(tmp_path / "no.toml")])
    assert result.exit_code == 2 and "cannot read study file" in result.output


def test_cli_reports_problems_of_a_broken_site(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    result = runner.invoke(app, ["data", "check", str(root), "--study", str(_study(tmp_path)),
                                 "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["problems"][0]["file"] == "participants.tsv"
    assert "not found" in payload["unusable_reasons"][0]


def test_cli_synth_eeg_formats_tasks_and_check(tmp_path: Path) -> None:
    out = tmp_path / "sites"
    result = runner.invoke(app, ["synth", "eeg", "--out", str(out), "--sites", "1",
                                 "--participants", "6", "--duration", "20", "--format", "fif",
                                 "--task", "oddball", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["format"], payload["layout"], payload["task"]) == ("fif", "loose", "oddball")
    root = Path(payload["sites"]["hospital-a"])
    assert (root / "recordings.tsv").is_file() and list(root.glob("sub-*/*_eeg.fif"))
    study = _study(tmp_path, 'label_source = "events"\nclasses = { standard = 0, target = 1 }')
    result = runner.invoke(app, ["data", "check", str(root), "--study", str(study), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layout"] == "loose" and report["label_source"] == "events"
    assert all(c["windows"] > 0 for c in report["classes"])
    result = runner.invoke(app, ["synth", "eeg", "--out", str(out), "--format", "fif",
                                 "--layout", "bids"])
    assert result.exit_code == 2 and "FIF is for MEG" in result.output
    result = runner.invoke(app, ["synth", "eeg", "--out", str(out), "--format", "gdf"])
    assert result.exit_code == 2
