"""The study file: defaults, validation messages naming the bad key."""

from __future__ import annotations

import pytest

from fedneuro.study import Study, StudyFileError, default_study_path, load_study, parse_study


def test_default_study_is_valid_and_round_trips() -> None:
    study = load_study(default_study_path())
    assert study.study.id == "demo-abnormal-eeg"
    assert Study.from_json(study.to_json()) == study
    assert len(study.digest()) == 64


def test_digest_changes_with_any_setting() -> None:
    study = load_study(default_study_path())
    changed = study.model_copy(update={"privacy": study.privacy.model_copy(update={"noise_multiplier": 0.81})})
    assert changed.digest() != study.digest()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[study]\nid = "x"\n[privacy]\nnoise_multipler = 1.0', r"\[privacy\] noise_multipler: unknown key"),
        ('[study]\nid = "x"\n[privacy]\ndelta = -1', r"\[privacy\] delta: .*greater than 0 \(got -1\)"),
        ('[study]\nid = "x"\n[model.adapter]\nrank = 0', r"\[model.adapter\] rank"),
        ('[study]\nid = "x"\n[data]\nclasses = { a = 0, b = 2 }', r"\[data\] classes: .*0..K-1"),
        ('[study]\nid = "x"\n[data]\nl_freq = 50\nh_freq = 40', r"l_freq \(50.0\) must be below h_freq"),
        ('[data]\nlabel_column = "dx"', r"\[study\]: Field required"),
        ('[study]\nid = "has space"', r"\[study\] id"),
        ("[study\nid=", "is not valid TOML"),
        ('[study]\nid = "x"\n[data]\nh_freq = 120', r"h_freq \(120.0 Hz\) must be below the Nyquist frequency \(100 Hz\)"),
        ('[study]\nid = "x"\n[model]\nbackbone = "gpt"', r"Invalid value for the 'backbone' parameter"),
        ('[study]\nid = "x"\n[data]\nconsent_values = []', r"\[data\] consent_values"),
    ],
)
def test_bad_study_files_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(StudyFileError, match=message):
        parse_study(toml, source="bad.toml")


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(StudyFileError, match="cannot read study file .*nope.toml"):
        load_study(tmp_path / "nope.toml")
