"""Reading NIfTI: malformed files are refused with the file and the problem named; real
files shipped with nibabel go through reader and harmoniser; geometry is right."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedneuro.data.mri import load_volume_file
from fedneuro.data.mri_harmonise import harmonise_volume, otsu_threshold
from fedneuro.data.mri_read import MRIFileError, mri_paths_for, read_nifti
from fedneuro.data.mri_spec import MRIContract, MRIDataSpec
from fedneuro.data.synth_mri import site_affine

pytestmark = pytest.mark.filterwarnings("error")

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
T1W = MRIDataSpec()
BOLD = MRIDataSpec(suffix="bold")


def _blob_image(shape: tuple[int, ...] = (12, 12, 12)) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 10, size=shape).astype(np.float32)
    data[3:9, 3:9, 3:9] += 100.0
    return data


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _raw_nifti(path: Path, header: nib.Nifti1Header, payload: bytes) -> Path:
    """Write header + payload byte for byte (no nibabel fixes), gzipped for .gz names."""
    header["vox_offset"] = 352
    blob = header.binaryblock + b"\x00" * 4 + payload
    if path.name.endswith(".gz"):
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


def _header(shape: tuple[int, ...], pixdim: tuple[float, ...] = (1, 1, 1)) -> nib.Nifti1Header:
    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_data_dtype(np.float32)
    h["pixdim"][1:4] = pixdim
    h["qform_code"] = 0
    h["sform_code"] = 0
    return h


# ----------------------------------------------------------------------------- bad input
def _empty(d: Path) -> Path:
    (d / "sub-01_T1w.nii.gz").write_bytes(b"")
    return d / "sub-01_T1w.nii.gz"


def _text(d: Path) -> Path:
    (d / "notes.nii").write_text("patient notes, not an image\n" * 40)
    return d / "notes.nii"


def _text_gz(d: Path) -> Path:
    (d / "sub-01_T1w.nii.gz").write_text("an email, saved under the wrong name\n")
    return d / "sub-01_T1w.nii.gz"


def _not_gzip(d: Path) -> Path:
    plain = _save(d / "plain.nii", _blob_image())
    target = d / "plain.nii.gz"
    plain.rename(target)
    return target


def _truncated_gzip(d: Path) -> Path:
    path = _save(d / "cut.nii.gz", _blob_image((30, 30, 30)))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return path


def _size_mismatch(d: Path) -> Path:
    path = _save(d / "short.nii", _blob_image())
    path.write_bytes(path.read_bytes()[:-1000])
    return path


def _singular(d: Path) -> Path:
    img = nib.Nifti1Image(_blob_image(), np.eye(4))
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    img.header.set_qform(None, code=0)
    return _raw_nifti(d / "flat.nii.gz", img.header, _blob_image().tobytes())


def _zero_dim(d: Path) -> Path:
    return _save(d / "nothing.nii.gz", np.zeros((0, 4, 4), np.float32))


def _two_d(d: Path) -> Path:
    return _save(d / "slice.nii.gz", np.ones((16, 16), np.float32))


def _five_d(d: Path) -> Path:
    return _save(d / "five.nii.gz", np.ones((4, 4, 4, 2, 2), np.float32))


def _zero_zoom(d: Path) -> Path:
    return _raw_nifti(d / "zerozoom.nii", _header((6, 6, 6), (0, 1, 1)),
                      _blob_image((6, 6, 6)).tobytes(order="F"))


def _negative_zoom(d: Path) -> Path:
    return _raw_nifti(d / "negzoom.nii.gz", _header((6, 6, 6), (1, -1.5, 1)),
                      _blob_image((6, 6, 6)).tobytes(order="F"))


def _huge_voxels(d: Path) -> Path:
    return _save(d / "km.nii.gz", _blob_image(), np.diag([1000.0, 1000, 1000, 1]))


def _absurd_dims(d: Path) -> Path:
    return _raw_nifti(d / "dims.nii.gz", _header((5000, 5000, 5000)), b"\x00" * 64)


def _nan(d: Path) -> Path:
    data = _blob_image()
    data[0, :2, 0] = np.nan
    return _save(d / "nan.nii.gz", data)


def _inf(d: Path) -> Path:
    data = _blob_image()
    data[5, 5, 5] = np.inf
    return _save(d / "inf.nii.gz", data)


def _blank(d: Path) -> Path:
    return _save(d / "blank.nii.gz", np.full((8, 8, 8), 7, np.float32))


def _complex(d: Path) -> Path:
    return _save(d / "complex.nii.gz", _blob_image().astype(np.complex64))


def _wrong_extension(d: Path) -> Path:
    nib.save(nib.MGHImage(_blob_image(), np.eye(4)), d / "brain.mgz")
    return d / "brain.mgz"


def _wrong_suffix(d: Path) -> Path:
    return _save(d / "sub-01_T2w.nii.gz", _blob_image())


def _four_d_as_t1w(d: Path) -> Path:
    return _save(d / "sub-01_T1w.nii.gz", np.stack([_blob_image()] * 3, axis=-1))


def _nonfinite_affine(d: Path) -> Path:
    img = nib.Nifti1Image(_blob_image(), np.eye(4))
    aff = np.eye(4)
    aff[0, 3] = np.nan
    img.header.set_sform(aff, code=1)
    return _raw_nifti(d / "nanaffine.nii", img.header, _blob_image().tobytes(order="F"))


def _missing(d: Path) -> Path:
    return d / "sub-01_T1w.nii.gz"


BAD_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty file": (_empty, r"empty file \(0 bytes\)"),
    "not a NIfTI": (_text, r"not a readable NIfTI file"),
    ".gz but not gzip": (_not_gzip, r"an uncompressed NIfTI file named \.nii\.gz.*Rename it"),
    "text named .nii.gz": (_text_gz, r"not a readable NIfTI file \(ImageFileError: .*not a gzip"),
    "truncated gzip": (_truncated_gzip, r"image data cannot be read \(EOFError.*truncated"),
    "header/data size mismatch": (_size_mismatch, r"header/data size mismatch.*holds"),
    "singular affine": (_singular, r"affine is singular"),
    "zero-size dimension": (_zero_dim, r"zero-size dimension \(shape \(0, 4, 4\)\)"),
    "2-D image": (_two_d, r"is 2-D \(shape \(16, 16\)\).*three spatial"),
    "5-D image": (_five_d, r"is 5-D.*only 3-D anatomical and 4-D functional"),
    "zero voxel size": (_zero_zoom, r"pixdim\[1:4\] = \[0\.0, 1\.0, 1\.0\].*no sform"),
    "negative voxel size": (_negative_zoom, r"pixdim\[1:4\] = \[1\.0, -1\.5, 1\.0\]"),
    "absurd voxel size": (_huge_voxels, r"voxel size \[1000\.0.*implausible"),
    "absurd dimensions": (_absurd_dims, r"125,000,000,000 voxels.*corrupt dim"),
    "NaN voxels": (_nan, r"2 of 1,728 voxels are NaN or infinite"),
    "Inf voxels": (_inf, r"1 of 1,728 voxels are NaN or infinite"),
    "blank image": (_blank, r"every voxel has the value 7: a blank image"),
    "complex data": (_complex, r"data type complex64 is not real-valued"),
    "wrong extension": (_wrong_extension, r"unsupported file type \(\.mgz\).*mri_convert"),
    "wrong BIDS suffix": (_wrong_suffix, r"BIDS suffix 'T2w' where 'T1w' is expected"),
    "4-D image as T1w": (_four_d_as_t1w, r"4-D with 3 volumes but a T1w image must be 3-D.*"
                         r"set data.suffix"),
    "non-finite affine": (_nonfinite_affine, r"affine \(sform/qform\) has non-finite"),
    "missing file": (_missing, r"file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_is_refused_with_reason(case: str, tmp_path: Path) -> None:
    make, match = BAD_CASES[case]
    path = make(tmp_path)
    with pytest.raises(MRIFileError, match=match) as info:
        read_nifti(path, suffix="T1w")
    assert str(path) in str(info.value)  # the message names the file
    assert info.value.path == path and info.value.problems


def test_every_problem_of_a_file_is_listed(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.ones((4, 4, 4, 2, 2), np.complex64), np.eye(4))
    img.header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
    img.header.set_qform(None, code=0)
    path = _raw_nifti(tmp_path / "awful.nii", img.header, b"\x00" * 4096)
    with pytest.raises(MRIFileError) as info:
        read_nifti(path)
    assert len(info.value.problems) == 3
    assert "is 5-D" in str(info.value) and "complex64" in str(info.value)
    assert "affine is singular" in str(info.value)


def test_bold_must_be_4d_and_directories_are_not_files(tmp_path: Path) -> None:
    path = _save(tmp_path / "sub-01_task-rest_bold.nii.gz", _blob_image())
    with pytest.raises(MRIFileError, match=r"is 3-D .* but a bold run must be 4-D"):
        read_nifti(path, suffix="bold")
    with pytest.raises(MRIFileError, match="is a directory"):
        read_nifti(tmp_path)


def test_oddities_are_noted_not_refused(tmp_path: Path) -> None:
    # A valid sform rescues a zero pixdim; meters are converted; one-volume 4-D is 3-D.
    img = nib.Nifti1Image(_blob_image()[..., None], np.diag([0.002, 0.002, 0.002, 1.0]))
    img.header.set_xyzt_units("meter")
    img.header.set_sform(img.affine, code=1)
    img.header.set_qform(None, code=0)
    img.header["pixdim"][1:4] = (0, 2, 2)
    path = _raw_nifti(tmp_path / "sub-01_T1w.nii.gz", img.header,
                      _blob_image().tobytes(order="F"))
    vol = read_nifti(path, suffix="T1w")
    assert vol.data.shape == (12, 12, 12) and vol.info.voxel_size_mm == (2.0, 2.0, 2.0)
    notes = " | ".join(vol.info.problems)
    assert "geometry from the sform" in notes and "'meter' converted to mm" in notes
    assert "single volume: used as 3-D" in notes


# ----------------------------------------------------------------------------- nibabel files
def test_nibabel_anatomical_reorients_exactly() -> None:
    """anatomical.nii is stored LAS: on its own grid, RAS output is the x-flipped array."""
    path = NIBABEL_DATA / "anatomical.nii"
    vol = read_nifti(path)
    assert vol.info.orientation == "LAS" and vol.info.shape == (33, 41, 25)
    assert vol.info.voxel_size_mm == (2.0, 2.0, 2.0) and vol.info.format == "NIfTI-1"
    spec = MRIDataSpec(intensity_normalisation="none", crop_centre="field-of-view")
    contract = MRIContract(shape=(33, 41, 25), voxel_size_mm=(2, 2, 2))
    out, rep = harmonise_volume(vol, contract, spec)
    assert out.shape == (1, 1, 33, 41, 25) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], vol.data[::-1], rtol=1e-5, atol=1e-3)
    assert rep.foreground_kept == 1.0 and rep.source.orientation == "LAS"


def test_nibabel_anatomical_to_a_model_grid() -> None:
    contract = MRIContract(shape=(24, 28, 18), voxel_size_mm=(3, 3, 3))
    out, rep = load_volume_file(NIBABEL_DATA / "anatomical.nii", contract, T1W)
    assert out.shape == (1, 1, 24, 28, 18) and np.isfinite(out).all()
    assert rep.foreground_kept > 0.95 and rep.n_outputs == 1
    assert out.min() < -1 and out.max() > 1 and abs(float(np.median(out))) < 1.5


@pytest.mark.parametrize("name", ["example4d.nii.gz", "example_nifti2.nii.gz"])
def test_nibabel_4d_files(name: str) -> None:
    path = NIBABEL_DATA / name
    contract = MRIContract(shape=(32, 32, 16), voxel_size_mm=(4, 4, 4))
    out, rep = load_volume_file(path, contract, BOLD)
    assert out.shape == (1, 1, 32, 32, 16) and np.isfinite(out).all()
    assert rep.source.n_volumes == 2 and rep.n_volumes_used == 2
    assert rep.source.format == ("NIfTI-2" if "nifti2" in name else "NIfTI-1")
    assert rep.source.orientation == "LAS"
    if name == "example4d.nii.gz":  # an oblique acquisition with a TR in ms labelled s
        assert rep.source.oblique_deg > 5
        assert any("oblique" in p for p in rep.problems)
        assert any("repetition time 2000 s is implausible" in p for p in rep.problems)
    per_volume = MRIDataSpec(suffix="bold", fmri_mode="volumes", drop_initial_volumes=1)
    out, rep = load_volume_file(path, contract, per_volume)
    assert out.shape == (1, 1, 32, 32, 16) and rep.n_volumes_used == 1
    both = MRIDataSpec(suffix="bold", fmri_mode="mean_std")
    out, _ = load_volume_file(path, contract.model_copy(update={"n_channels": 2}), both)
    assert out.shape == (1, 2, 32, 32, 16)
    with pytest.raises(MRIFileError, match="drop_initial_volumes=2 leaves none"):
        load_volume_file(path, contract, BOLD.model_copy(update={"drop_initial_volumes": 2}))
    with pytest.raises(MRIFileError, match=r"is 4-D with 2 volumes but a T1w image must"):
        load_volume_file(path, contract, T1W)
    vol = read_nifti(path)  # no suffix expected: read as it is, refused by the harmoniser
    with pytest.raises(MRIFileError, match=r"is 4-D .* suffix 'T1w' needs 3-D"):
        harmonise_volume(vol, contract, T1W)


def test_functional_nii_summaries() -> None:
    path = NIBABEL_DATA / "functional.nii"
    contract = MRIContract(shape=(16, 20, 6), voxel_size_mm=(4, 4, 4))
    mean, _ = load_volume_file(path, contract, BOLD)
    std, _ = load_volume_file(path, contract, MRIDataSpec(suffix="bold", fmri_mode="std"))
    vols, rep = load_volume_file(path, contract, MRIDataSpec(suffix="bold", fmri_mode="volumes"))
    assert vols.shape == (20, 1, 16, 20, 6) and rep.n_outputs == 20
    assert not np.allclose(mean, std)


# ----------------------------------------------------------------------------- geometry
def _phantom(world: np.ndarray) -> np.ndarray:
    """An asymmetric object: a head-like ellipsoid with a bright blob right-anterior-top."""
    x, y, z = world
    head = ((x / 22) ** 2 + (y / 26) ** 2 + (z / 20) ** 2) < 1
    blob = ((x - 10) ** 2 + (y - 8) ** 2 + (z - 6) ** 2) < 25
    return 100.0 * head + 200.0 * blob


@pytest.mark.parametrize(
    ("codes", "vox", "tilt"),
    [("RAS", 1.0, 0.0), ("LAS", 1.2, 0.0), ("PSR", 1.5, 8.0), ("ILP", 1.1, -10.0)],
)
def test_any_orientation_lands_in_ras(tmp_path: Path, codes: str, vox: float, tilt: float) -> None:
    affine, shape = site_affine(codes, (vox, vox, vox), 64.0, tilt)
    ijk = np.indices(shape).reshape(3, -1)
    data = _phantom(affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(shape).astype(np.float32)
    path = _save(tmp_path / "img.nii.gz", data, affine)
    contract = MRIContract(shape=(32, 32, 32), voxel_size_mm=(2, 2, 2))
    spec = MRIDataSpec(intensity_normalisation="none", crop_centre="field-of-view")
    out, rep = load_volume_file(path, contract, spec)
    assert rep.source.orientation == codes
    # Reference: the phantom sampled directly on the RAS output grid (2 mm, centred at 0).
    grid = (np.indices(contract.shape).reshape(3, -1) - 15.5) * 2.0
    ref = _phantom(grid).reshape(contract.shape)
    corr = np.corrcoef(out[0, 0].ravel(), ref.ravel())[0, 1]
    assert corr > 0.93, corr
    blob = np.unravel_index(np.argmax(out[0, 0]), contract.shape)
    np.testing.assert_allclose(np.array(blob) * 2.0 - 31.0, [10, 8, 6], atol=3.0)


def test_crop_too_small_is_refused_and_otsu(tmp_path: Path) -> None:
    affine, shape = site_affine("RAS", (2, 2, 2), 64.0)
    ijk = np.indices(shape).reshape(3, -1)
    data = _phantom(affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(shape).astype(np.float32)
    path = _save(tmp_path / "img.nii.gz", data + 1.0, affine)
    tiny = MRIContract(shape=(8, 8, 8), voxel_size_mm=(2, 2, 2))
    with pytest.raises(MRIFileError, match=r"keeps only \d+% of the head"):
        load_volume_file(path, tiny, T1W)
    _, rep = load_volume_file(path, tiny, T1W.model_copy(update={"min_foreground_kept": 0.0}))
    assert any("crops" in p for p in rep.problems)
    assert 1.0 < otsu_threshold(data + 1.0) < 101.0


def test_intensity_normalisations(tmp_path: Path) -> None:
    affine, shape = site_affine("LAS", (2, 2, 2), 64.0)
    ijk = np.indices(shape).reshape(3, -1)
    data = _phantom(affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(shape).astype(np.float32)
    contract = MRIContract(shape=(32, 32, 32), voxel_size_mm=(2, 2, 2))
    outs = {}
    for scale in (1.0, 37.0):
        path = _save(tmp_path / f"s{scale}.nii.gz", data * scale + 5.0, affine)
        for mode in ("zscore-foreground", "minmax", "none"):
            spec = MRIDataSpec(intensity_normalisation=mode)
            outs[mode, scale] = load_volume_file(path, contract, spec)[0][0, 0]
    for mode in ("zscore-foreground", "minmax"):  # scanner gain no longer matters
        np.testing.assert_allclose(outs[mode, 1.0], outs[mode, 37.0], atol=1e-3)
    assert outs["minmax", 1.0].min() >= 0.0 and outs["minmax", 1.0].max() <= 1.0
    ratio = outs["none", 37.0].max() / outs["none", 1.0].max()
    assert ratio == pytest.approx((37 * 300 + 5) / 305, rel=0.02)  # raw units kept


def test_paths_found_by_name_only(tmp_path: Path) -> None:
    anat = tmp_path / "sub-01" / "anat"
    ses = tmp_path / "sub-01" / "ses-02" / "anat"
    func = tmp_path / "sub-01" / "func"
    for folder in (anat, ses, func):
        folder.mkdir(parents=True)
    for p in (anat / "sub-01_T1w.nii.gz", anat / "sub-01_T2w.nii.gz", anat / "sub-01_T1w.json",
              ses / "sub-01_ses-02_run-1_T1w.nii", anat / ".sub-01_T1w.nii.gz",
              func / "sub-01_task-rest_bold.nii.gz", func / "sub-01_task-nback_bold.nii.gz"):
        p.write_bytes(b"not opened")
    assert [p.name for p in mri_paths_for(tmp_path, "sub-01", T1W)] == [
        "sub-01_T1w.nii.gz", "sub-01_ses-02_run-1_T1w.nii"
    ]
    only_ses = MRIDataSpec(session="02")
    assert [p.name for p in mri_paths_for(tmp_path, "01", only_ses)] == [
        "sub-01_ses-02_run-1_T1w.nii"
    ]
    rest = MRIDataSpec(suffix="bold", task="rest")
    assert [p.name for p in mri_paths_for(tmp_path, "sub-01", rest)] == [
        "sub-01_task-rest_bold.nii.gz"
    ]
    assert len(mri_paths_for(tmp_path, "sub-01", BOLD)) == 2
    assert mri_paths_for(tmp_path, "sub-99", T1W) == []
