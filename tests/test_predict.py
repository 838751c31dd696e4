"""`fedneuro predict`: per-recording predictions from an exported model or study + adapter."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedneuro.models.export import load_model_dir
from fedneuro.training.predict import (
    PredictInputError,
    export_study_model,
    load_study_model,
    predict_recordings,
)
from test_export import make_study, save_trained_adapter  # helpers shared with the export tests


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fedneuro.data.synth import DEFAULT_PROFILES, synthesize_site

    tmp = tmp_path_factory.mktemp("predict")
    site = synthesize_site(tmp / "sites", DEFAULT_PROFILES[0], n_participants=4, duration_s=12.0, seed=1)
    study, study_path = make_study(tmp, "biot-tiny")
    adapter = tmp / "global_adapter.safetensors"
    save_trained_adapter(study, adapter)
    export_study_model(study, adapter, tmp / "model")
    return {"site": site, "study": study_path, "adapter": adapter, "model": tmp / "model", "tmp": tmp}


def test_predicts_every_recording_of_a_bids_dataset(setup: dict[str, Path]) -> None:
    rows = predict_recordings(load_model_dir(setup["model"]), setup["site"], device="cpu")
    assert [r.participant for r in rows] == ["sub-001", "sub-002", "sub-003", "sub-004"]
    for r in rows:
        assert r.error is None and r.n_windows == 3  # 12 s in 4-s windows
        assert r.recording.startswith(r.participant + "/eeg/") and r.recording.endswith("_eeg.edf")
        assert set(r.probabilities) == {"normal", "abnormal"}
        assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert r.predicted == max(r.probabilities, key=r.probabilities.__getitem__)


def test_single_file_and_study_plus_adapter_give_the_same_predictions(setup: dict[str, Path]) -> None:
    from fedneuro.study import load_study

    edf = next(setup["site"].glob("sub-002/eeg/*_eeg.edf"))
    from_dir = predict_recordings(load_model_dir(setup["model"]), edf, device="cpu")
    from_study = predict_recordings(load_study_model(load_study(setup["study"]), setup["adapter"]), edf)
    assert len(from_dir) == 1 and from_dir[0].participant == "sub-002"
    assert from_dir[0].recording == str(edf)
    np.testing.assert_allclose(list(from_dir[0].probabilities.values()),
                               list(from_study[0].probabilities.values()), rtol=1e-5)
    loose = setup["tmp"] / "loose.edf"  # outside any BIDS dataset: read as a plain EDF file
    shutil.copy(edf, loose)
    again = predict_recordings(load_model_dir(setup["model"]), loose)
    assert again[0].participant is None and again[0].n_windows == from_dir[0].n_windows


def test_unusable_inputs_are_reported(setup: dict[str, Path]) -> None:
    model = load_model_dir(setup["model"])
    bad = setup["tmp"] / "sub-009_task-rest_eeg.edf"
    bad.write_bytes(b"0" * 300)
    rows = predict_recordings(model, bad)
    assert rows[0].predicted is None and rows[0].participant == "sub-009" and rows[0].error
    with pytest.raises(PredictInputError, match="does not exist: give a BIDS dataset folder or an EEG file"):
        predict_recordings(model, setup["tmp"] / "nowhere")
    (setup["tmp"] / "empty").mkdir()
    with pytest.raises(PredictInputError, match="no EEG recordings found under .*expected a BIDS dataset"):
        predict_recordings(model, setup["tmp"] / "empty")


def test_mri_model_on_an_eeg_dataset_finds_no_images(tmp_path: Path, setup: dict[str, Path]) -> None:
    study, _ = make_study(tmp_path, "mri-vit-tiny")
    adapter = tmp_path / "a.safetensors"
    save_trained_adapter(study, adapter)
    with pytest.raises(PredictInputError, match="no T1w images found under"):
        predict_recordings(load_study_model(study, adapter), setup["site"])


def test_cli_predict_writes_csv_and_json(setup: dict[str, Path]) -> None:
    from fedneuro.cli.main import app

    out = setup["tmp"] / "predictions.csv"
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "--model", str(setup["model"]), "--input", str(setup["site"]),
                                 "--out", str(out), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload) == 4 and payload[0]["participant"] == "sub-001"
    with out.open() as handle:
        lines = list(csv.DictReader(handle))
    assert list(lines[0]) == ["recording", "participant", "n_windows", "p_normal", "p_abnormal", "predicted", "error"]
    assert [row["participant"] for row in lines] == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert lines[0]["predicted"] == payload[0]["predicted"]

    result = runner.invoke(app, ["predict", "--study", str(setup["study"]), "--adapter", str(setup["adapter"]),
                                 "--input", str(setup["site"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", "--model", str(setup["model"]), "--study", str(setup["study"]),
                                 "--input", str(setup["site"]), "--out", str(out)])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(app, ["predict", "--model", str(setup["tmp"] / "missing"), "--input",
                                 str(setup["site"]), "--out", str(out)])
    assert result.exit_code == 2 and "fedneuro model export" in " ".join(result.output.split())
    result = runner.invoke(app, ["predict", "--model", str(setup["model"]), "--input", str(setup["site"]),
                                 "--out", str(out), "--device", "cuda:7"])
    assert result.exit_code == 2 and "'device'" in result.output


def test_predict_on_an_mri_site_gives_one_row_per_image_and_reports_bad_files(tmp_path) -> None:
    import csv

    from safetensors.numpy import save_file as save_numpy
    from typer.testing import CliRunner

    from fedneuro.cli.main import app as cli
    from fedneuro.data.synth_mri import DEFAULT_MRI_PROFILES, synthesize_mri_site
    from fedneuro.models.exchange import trainable_state as adapter_state
    from fedneuro.study import default_study_path as study_template
    from fedneuro.study import load_study as read_study
    from fedneuro.training.site import build_study_model as study_model

    study_path = study_template("mri")
    adapter = tmp_path / "adapter.safetensors"
    save_numpy(adapter_state(study_model(read_study(study_path)).module), str(adapter))
    site = synthesize_mri_site(tmp_path / "mri", DEFAULT_MRI_PROFILES[0], n_participants=5, seed=0)
    (site / "sub-002" / "anat" / "sub-002_T1w.nii.gz").write_bytes(b"broken")
    out = tmp_path / "predictions.csv"
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", "--study", str(study_path), "--adapter", str(adapter),
                                 "--input", str(site), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5
    bad = [r for r in rows if r["participant"] == "sub-002"]
    assert bad and "sub-002_T1w.nii.gz" in bad[0]["error"]
    good = [r for r in rows if not r["error"]]
    assert all(abs(float(r["p_normal"]) + float(r["p_abnormal"]) - 1) < 1e-4 for r in good) and len(good) == 4
