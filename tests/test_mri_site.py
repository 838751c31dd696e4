"""Synthetic MRI sites as BIDS, and a site's images -> VolumeSet: the governance gate,
bad files in a dataset, fMRI modes, and a class signal that survives harmonisation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedneuro.data import synth_mri
from fedneuro.data.mri import (
    MRIFileError,
    MRISiteReport,
    VolumeSet,
    load_site_volumes,
    load_volume_file,
    mri_cohort,
    split_volume_set,
)
from fedneuro.data.mri_spec import MRIContract, MRIDataSpec
from fedneuro.data.synth_mri import (
    DEFAULT_MRI_PROFILES,
    MRISiteProfile,
    synthesize_mri_consortium,
    synthesize_mri_site,
)

pytestmark = pytest.mark.filterwarnings("error")

N_PARTICIPANTS = 12
SEED = 7
SPEC = MRIDataSpec()
CONTRACT = MRIContract(shape=(40, 40, 40), voxel_size_mm=(1.5, 1.5, 1.5))


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three default sites, small; read-only (copy before corrupting)."""
    out = tmp_path_factory.mktemp("mri-consortium")
    return dict(synthesize_mri_consortium(out, participants_per_site=N_PARTICIPANTS, seed=SEED))


@pytest.fixture(scope="module")
def volumes(consortium: dict[str, Path]) -> dict[str, VolumeSet]:
    return {
        name: load_site_volumes(root, mri_cohort(root, SPEC), CONTRACT, SPEC)
        for name, root in consortium.items()
    }


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "participants.tsv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _t1w(root: Path, pid: str) -> Path:
    return root / pid / "anat" / f"{pid}_T1w.nii.gz"


# ----------------------------------------------------------------------------- synthesis
def test_bids_layout_and_participants(consortium: dict[str, Path]) -> None:
    assert list(consortium) == ["hospital-a", "hospital-b", "hospital-c"]
    for root in consortium.values():
        desc = json.loads((root / "dataset_description.json").read_text())
        assert desc["BIDSVersion"] and desc["DatasetType"] == "raw" and desc["Name"]
        rows = _rows(root)
        assert len(rows) == N_PARTICIPANTS
        assert list(rows[0]) == ["participant_id", "age", "sex", "diagnosis", "consent",
                                 "consent_duo", "consent_date", "consent_expiry", "consent_withdrawn"]
        diagnoses = [r["diagnosis"] for r in rows]
        assert diagnoses.count("normal") == diagnoses.count("abnormal") == N_PARTICIPANTS // 2
        assert 1 <= sum(r["consent"] != "yes" for r in rows) <= 3
        assert (root / "participants.json").is_file()
        for r in rows:  # everyone has files: the gate, not the data, excludes
            assert _t1w(root, r["participant_id"]).is_file()
            sidecar = json.loads(_t1w(root, r["participant_id"]).with_suffix("").with_suffix(
                ".json").read_text())
            assert sidecar["MagneticFieldStrength"] in (1.5, 3.0)
        assert not list(root.parent.glob(".*"))  # no partial or old directories left


def test_sites_differ_as_scanners_do(consortium: dict[str, Path]) -> None:
    seen = {}
    for name, root in consortium.items():
        img = nib.load(_t1w(root, "sub-001"))
        head = np.asarray(img.dataobj)
        seen[name] = (
            "".join(nib.aff2axcodes(img.affine)),
            tuple(round(float(z), 3) for z in img.header.get_zooms()),
            str(img.get_data_dtype()),
            float(np.percentile(head, 90)),
        )
    assert [s[0] for s in seen.values()] == ["RAS", "LAS", "PSR"]
    assert [s[1][0] for s in seen.values()] == [1.0, 1.2, 1.5]
    assert [s[2] for s in seen.values()] == ["int16", "int16", "float32"]
    scales = [s[3] for s in seen.values()]
    assert scales[1] / scales[0] > 2 and scales[0] / scales[2] > 300
    c = nib.load(_t1w(consortium["hospital-c"], "sub-001"))
    assert np.degrees(np.max(nib.affines.obliquity(c.affine))) == pytest.approx(8.0, abs=0.1)


def test_deterministic_by_seed(tmp_path: Path) -> None:
    prof = DEFAULT_MRI_PROFILES[2]
    a = synthesize_mri_site(tmp_path / "a", prof, n_participants=4, seed=3)
    b = synthesize_mri_site(tmp_path / "b", prof, n_participants=4, seed=3)
    c = synthesize_mri_site(tmp_path / "c", prof, n_participants=4, seed=4)
    assert (a / "participants.tsv").read_text() == (b / "participants.tsv").read_text()
    da, db, dc = (np.asarray(nib.load(_t1w(r, "sub-002")).dataobj) for r in (a, b, c))
    np.testing.assert_array_equal(da, db)
    assert not np.array_equal(da, dc)


def test_same_heads_scanned_differently_harmonise_alike(tmp_path: Path) -> None:
    """Same seed, two scanners (RAS 1 mm vs PSR 1.5 mm oblique): after harmonisation the
    images agree; the raw arrays, merely resized, do not."""
    a = synthesize_mri_site(tmp_path / "a", DEFAULT_MRI_PROFILES[0], n_participants=4, seed=11)
    c = synthesize_mri_site(tmp_path / "c", DEFAULT_MRI_PROFILES[2], n_participants=4, seed=11)
    for pid in ("sub-001", "sub-002"):
        xa, _ = load_volume_file(_t1w(a, pid), CONTRACT, SPEC)
        xc, _ = load_volume_file(_t1w(c, pid), CONTRACT, SPEC)
        assert np.corrcoef(xa.ravel(), xc.ravel())[0, 1] > 0.97
        raw = [np.asarray(nib.load(_t1w(r, pid)).dataobj, dtype=np.float64) for r in (a, c)]
        naive = [ndimage.zoom(v, 40 / v.shape[0], order=1) for v in raw]
        assert np.corrcoef(naive[0].ravel(), naive[1].ravel())[0, 1] < 0.92


def test_atomic_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prof = DEFAULT_MRI_PROFILES[0]
    root = synthesize_mri_site(tmp_path, prof, n_participants=4, seed=1)
    before = (root / "participants.tsv").read_text()
    calls = {"n": 0}
    real = synth_mri._save_nifti

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(synth_mri, "_save_nifti", flaky)
    with pytest.raises(OSError, match="disk full"):
        synthesize_mri_site(tmp_path, prof, n_participants=4, seed=2)
    assert (root / "participants.tsv").read_text() == before  # old dataset intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hospital-a"]  # no partial dir


def test_profile_and_size_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'orientation' must be 3 axis codes.*'RRS'.*"
                                         r"'noise' must be in"):
        MRISiteProfile(name="x", voxel_size_mm=(1, 1, 1), orientation="RRS", tilt_deg=0,
                       intensity_scale=100, noise=2.0, bias=0.1, dtype="int16")
    with pytest.raises(ValueError, match=r"int16 storage needs 'intensity_scale'"):
        MRISiteProfile(name="x", voxel_size_mm=(1, 1, 1), orientation="RAS", tilt_deg=0,
                       intensity_scale=1.0, noise=0.0, bias=0.1, dtype="int16")
    with pytest.raises(ValueError, match=r"'n_participants' parameter: must be an int >= 4"):
        synthesize_mri_site(tmp_path, DEFAULT_MRI_PROFILES[0], n_participants=3, seed=0)
    with pytest.raises(ValueError, match=r"'n_sites' parameter"):
        synthesize_mri_consortium(tmp_path, n_sites=0)


# ----------------------------------------------------------------------------- loading
def test_site_volumes(consortium: dict[str, Path], volumes: dict[str, VolumeSet]) -> None:
    for name, root in consortium.items():
        vs = volumes[name]
        cohort = mri_cohort(root, SPEC)
        assert vs.X.shape == (len(cohort), 1, 40, 40, 40) and vs.X.dtype == np.float32
        assert vs.y.dtype == np.int64 and vs.participant.dtype == np.int64
        assert vs.participant_ids == list(cohort.participant_ids)
        assert vs.participant_labels.tolist() == list(cohort.labels)
        rep = vs.report
        assert not rep.refused and not rep.without_volumes and rep.n_outputs == len(cohort)
        assert [v.participant_id for v in rep.volumes] == list(cohort.participant_ids)
        assert rep.volumes[0].source.shape[0] == {"hospital-a": 64, "hospital-b": 53,
                                                  "hospital-c": 43}[name]
        assert all(v.foreground_kept > 0.99 for v in rep.volumes)
        assert MRISiteReport.model_validate_json(rep.model_dump_json()) == rep
        assert "0 refused" in rep.summary()
        # zscore-foreground: each image's head voxels have mean 0, sd 1 before resampling,
        # so sites with 3000x different scanner units now share one scale.
        assert abs(float(vs.X.mean())) < 3 and 0.5 < float(vs.X.std()) < 3


def test_governance_gate_opens_only_cohort(
    consortium: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = shutil.copytree(consortium["hospital-b"], tmp_path / "site")
    cohort = mri_cohort(root, SPEC)
    excluded = sorted(cohort.excluded)
    assert excluded and all("consent" in why for why in cohort.excluded.values())
    for pid in excluded:  # unreadable: would fail if anything opened them
        _t1w(root, pid).write_bytes(b"withdrawn")
    opened: list[str] = []
    real_load = nib.load

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(Path(path).name.split("_")[0])
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(nib, "load", spy)
    vs = load_site_volumes(root, cohort, CONTRACT, SPEC)  # on_error="raise": nothing bad seen
    assert sorted(set(opened)) == sorted(cohort.participant_ids) == sorted(vs.participant_ids)
    assert not set(opened) & set(excluded)


def test_bad_files_in_a_site(consortium: dict[str, Path], tmp_path: Path) -> None:
    root = shutil.copytree(consortium["hospital-a"], tmp_path / "site")
    cohort = mri_cohort(root, SPEC)
    bad = cohort.participant_ids[:3]
    blob = _t1w(root, bad[0]).read_bytes()
    _t1w(root, bad[0]).write_bytes(blob[: len(blob) // 3])  # interrupted copy
    _t1w(root, bad[1]).write_text("not an image")
    img = nib.load(_t1w(root, bad[2]))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[10:12, 10:12, 10:12] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), _t1w(root, bad[2]))
    (root / bad[2] / "anat" / f"{bad[2]}_run-2_T1w.nii.gz").write_bytes(b"")
    names = {_t1w(root, p).name for p in bad} | {f"{bad[2]}_run-2_T1w.nii.gz"}

    with pytest.raises(MRIFileError, match=r"4 image file\(s\) could not be used") as info:
        load_site_volumes(root, cohort, CONTRACT, SPEC)
    assert all(n in str(info.value) for n in names) and "on_error='skip'" in str(info.value)

    vs = load_site_volumes(root, cohort, CONTRACT, SPEC, on_error="skip")
    assert set(vs.report.refused) == names
    assert "truncated or corrupt" in vs.report.refused[_t1w(root, bad[0]).name]
    assert "not a readable NIfTI" in vs.report.refused[_t1w(root, bad[1]).name]
    assert "NaN or infinite" in vs.report.refused[_t1w(root, bad[2]).name]
    assert "empty file" in vs.report.refused[f"{bad[2]}_run-2_T1w.nii.gz"]
    assert set(vs.report.without_volumes) == set(bad)
    assert vs.participant_ids == list(cohort.participant_ids[3:]) and len(vs) == len(cohort) - 3
    shutil.rmtree(root / cohort.participant_ids[3])  # a participant without any image
    vs = load_site_volumes(root, cohort, CONTRACT, SPEC, on_error="skip")
    assert "no image anat/*_T1w.nii[.gz] found" in vs.report.without_volumes[
        cohort.participant_ids[3]]
    with pytest.raises(ValueError, match="'on_error' parameter"):
        load_site_volumes(root, cohort, CONTRACT, SPEC, on_error="ignore")  # type: ignore[arg-type]


def test_volume_set_subset_and_split(volumes: dict[str, VolumeSet]) -> None:
    vs = volumes["hospital-c"]
    keep = vs.participant_ids[::2]
    sub = vs.subset(keep)
    assert sub.participant_ids == keep and len(sub) == len(keep)
    assert sub.participant_labels.tolist() == vs.participant_labels[::2].tolist()
    np.testing.assert_array_equal(sub.X[1], vs.X[2])
    assert [v.participant_id for v in sub.report.volumes] == keep
    with pytest.raises(ValueError, match=r"\['sub-999'\] have no volumes"):
        vs.subset(["sub-999"])
    train, test = split_volume_set(vs, test_fraction=0.3, seed=0)
    assert not set(train.participant_ids) & set(test.participant_ids)
    assert set(train.y.tolist()) == set(test.y.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="VolumeSet needs X"):
        VolumeSet(vs.X[:, 0], vs.y, vs.participant, vs.participant_ids, vs.report)


def test_bold_site(tmp_path: Path) -> None:
    root = synthesize_mri_site(tmp_path, DEFAULT_MRI_PROFILES[1], n_participants=4, seed=5,
                               n_bold_volumes=6)
    bold = root / "sub-001" / "func" / "sub-001_task-rest_bold.nii.gz"
    img = nib.load(bold)
    assert img.shape == (21, 21, 21, 6) and img.header.get_zooms()[3] == 2.0
    assert json.loads(bold.with_suffix("").with_suffix(".json").read_text())["TaskName"] == "rest"
    contract = MRIContract(shape=(20, 20, 20), voxel_size_mm=(3, 3, 3))
    spec = MRIDataSpec(suffix="bold", task="rest")
    cohort = mri_cohort(root, spec)
    mean = load_site_volumes(root, cohort, contract, spec)
    assert mean.X.shape == (len(cohort), 1, 20, 20, 20)
    assert mean.report.volumes[0].source.repetition_time_s == 2.0
    per_volume = spec.model_copy(update={"fmri_mode": "volumes", "drop_initial_volumes": 2})
    vs = load_site_volumes(root, cohort, contract, per_volume)
    assert vs.X.shape == (4 * len(cohort), 1, 20, 20, 20)
    assert np.bincount(vs.participant).tolist() == [4] * len(cohort)
    two = load_site_volumes(root, cohort, contract.model_copy(update={"n_channels": 2}),
                            spec.model_copy(update={"fmri_mode": "mean_std"}))
    assert two.X.shape == (len(cohort), 2, 20, 20, 20)
    with pytest.raises(ValueError, match="n_channels=1, but suffix 'bold'"):
        load_site_volumes(root, cohort, contract, spec.model_copy(update={"fmri_mode":
                                                                          "mean_std"}))
    nothing = load_site_volumes(root, cohort, contract, spec.model_copy(update={"task": "nback"}))
    assert len(nothing) == 0 and len(nothing.report.without_volumes) == len(cohort)


# ----------------------------------------------------------------------------- learnability
def _blocks(X: np.ndarray, k: int = 5) -> np.ndarray:
    n, _, a, b, c = X.shape
    return X[:, 0].reshape(n, a // k, k, b // k, k, c // k, k).mean(axis=(2, 4, 6)).reshape(n, -1)


def test_class_signal_survives_harmonisation(volumes: dict[str, VolumeSet]) -> None:
    """Leave one site out: a linear model on coarse harmonised volumes from two scanners
    separates atrophy from normal on the third scanner's (held-out) participants."""
    for held_out in volumes:
        train = [v for name, v in volumes.items() if name != held_out]
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        clf.fit(np.concatenate([_blocks(v.X) for v in train]),
                np.concatenate([v.y for v in train]))
        test = volumes[held_out]
        score = balanced_accuracy_score(test.y, clf.predict(_blocks(test.X)))
        assert score >= 0.8, (held_out, score)
