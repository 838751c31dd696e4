"""`fedneuro data check` on an MRI site: every bad image listed, exit code says usability."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedneuro.cli.main import app
from fedneuro.data.synth_mri import DEFAULT_MRI_PROFILES, synthesize_mri_site
from fedneuro.study import default_study_path

runner = CliRunner()


def test_mri_check_lists_bad_images_and_judges_usability(tmp_path: Path) -> None:
    root = synthesize_mri_site(tmp_path, DEFAULT_MRI_PROFILES[0], n_participants=8, seed=0)
    (root / "sub-001" / "anat" / "sub-001_T1w.nii.gz").write_bytes(b"not a nifti")
    result = runner.invoke(app, ["data", "check", str(root), "--study", str(default_study_path("mri")), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["usable"] is True
    assert "sub-001_T1w.nii.gz" in " ".join(report["refused"]) and "not a readable NIfTI" in " ".join(report["refused"].values())
    assert sum(report["samples_per_class"].values()) == len(report["images"]) > 0
    assert all("consent" in reason for reason in report["excluded"].values())

    for image in (root).glob("sub-*/anat/*_T1w.nii.gz"):
        image.write_bytes(b"")
    unusable = runner.invoke(app, ["data", "check", str(root), "--study", str(default_study_path("mri")), "--json"])
    assert unusable.exit_code == 1
    assert json.loads(unusable.stdout)["usable"] is False


def test_a_loose_mri_site_is_read_from_its_recordings_table(tmp_path: Path) -> None:
    import shutil

    from fedneuro.data.mri import load_site_volumes, mri_cohort
    from fedneuro.models.registry import get_backbone_preset
    from fedneuro.study import load_study

    bids = synthesize_mri_site(tmp_path / "bids", DEFAULT_MRI_PROFILES[1], n_participants=6, seed=0)
    loose = tmp_path / "loose"
    (loose / "scans").mkdir(parents=True)
    rows = ["path\tparticipant_id"]
    for image in sorted(bids.glob("sub-*/anat/*_T1w.nii.gz")):
        participant = image.name.split("_")[0]
        shutil.copy(image, loose / "scans" / f"{participant}.nii.gz")
        rows.append(f"scans/{participant}.nii.gz\t{participant}")
    (loose / "recordings.tsv").write_text("\n".join(rows) + "\n")
    shutil.copy(bids / "participants.tsv", loose / "participants.tsv")
    spec = load_study(default_study_path("mri")).mri
    cohort = mri_cohort(loose, spec)
    volumes = load_site_volumes(loose, cohort, get_backbone_preset("mri-resnet-tiny").contract, spec)
    assert volumes.participant_ids == list(cohort.participant_ids) and volumes.X.shape[1:] == (1, 32, 32, 32)
