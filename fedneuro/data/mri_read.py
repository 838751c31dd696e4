"""Read NIfTI images (.nii, .nii.gz) with nibabel, refusing malformed files with a reason.

Every check on a file runs before the error is raised, so one ``MRIFileError`` lists all
of a file's problems (the header checks, then - if the header is sound - the data checks).
Files of a BIDS dataset are found by name only (``mri_paths_for``); nothing is opened
there.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedneuro.data.mri_spec import (
    ANAT_SUFFIXES,
    FUNC_SUFFIXES,
    MAX_VOXEL_MM,
    MIN_VOXEL_MM,
    MRIDataSpec,
)

if TYPE_CHECKING:
    import nibabel as nib

__all__ = [
    "MAX_VOXELS",
    "NIFTI_EXTENSIONS",
    "MRIFileError",
    "NiftiVolume",
    "SourceInfo",
    "mri_paths_for",
    "nifti_extension",
    "read_nifti",
]

logger = logging.getLogger(__name__)

NIFTI_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")
#: More voxels than this (4 GiB as float32) means a corrupt ``dim[]`` in the header.
MAX_VOXELS = 2**30
_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}
_TIME_TO_S = {"sec": 1.0, "msec": 0.001, "usec": 1e-6}
# Affines that do not map voxel axes onto world axes by more than this are "oblique".
_OBLIQUE_RAD = 1e-3


class MRIFileError(ValueError):
    """An image file cannot be used; the message names the file, every problem and a fix.

    ``path`` is the file, ``problems`` the individual findings, ``hint`` the remedy.
    """

    def __init__(self, path: str | Path, problems: Sequence[str], hint: str = "") -> None:
        self.path = Path(path)
        self.problems = tuple(problems)
        self.hint = hint
        super().__init__(f"{self.path}: {self.reason}")

    @property
    def reason(self) -> str:
        """The message without the file name (what a site report lists per file)."""
        return "; ".join(self.problems) + "." + (f" {self.hint}" if self.hint else "")


class SourceInfo(BaseModel):
    """What an image file holds, as read (before any harmonisation).

    ``voxel_size_mm`` and ``orientation`` (nibabel axis codes, e.g. ``"LAS"``) come from
    the affine actually used; ``problems`` lists what was odd but usable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    format: str
    shape: tuple[int, ...]
    dtype: str
    voxel_size_mm: tuple[float, float, float]
    orientation: str
    oblique_deg: float
    n_volumes: int
    repetition_time_s: float | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class NiftiVolume:
    """A checked image: ``data`` float32 (x, y, z) or (x, y, z, t) as stored on disk,
    ``affine`` voxel -> world in millimetres, and what was found in ``info``."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    info: SourceInfo


def nifti_extension(path: str | Path) -> str | None:
    """``".nii.gz"`` or ``".nii"`` (case-insensitive) for a NIfTI file name, else None."""
    name = Path(path).name.lower()
    return next((ext for ext in NIFTI_EXTENSIONS if name.endswith(ext)), None)


def _bids_suffix(path: Path) -> str | None:
    """The BIDS suffix (``T1w``, ``bold``...) of a BIDS-named file, None for other names."""
    ext = nifti_extension(path)
    stem = path.name[: -len(ext)] if ext else path.stem
    if not stem.startswith("sub-") or "_" not in stem:
        return None
    return stem.rsplit("_", 1)[1]


def _check_path(path: Path, suffix: str | None) -> None:
    if path.is_dir():
        raise MRIFileError(path, ["is a directory, not an image file"], "Give a .nii/.nii.gz file.")
    if not path.exists():
        hint = "Check the path."
        if path.is_symlink():
            hint = "It is a broken link (datalad/git-annex content not fetched? `datalad get`)."
        raise MRIFileError(path, ["file not found"], hint)
    problems, hints = [], []
    if nifti_extension(path) is None:
        shown = "".join(path.suffixes[-2:]) or "no extension"
        problems.append(f"unsupported file type ({shown}): only NIfTI (.nii, .nii.gz) is read")
        hints.append(
            "Convert it to NIfTI (dcm2niix for DICOM; nibabel or mri_convert for "
            "MGH/MINC/Analyze)."
        )
    found = _bids_suffix(path)
    if suffix is not None and found is not None and found != suffix:
        problems.append(f"BIDS suffix {found!r} where {suffix!r} is expected")
        hints.append("Select the kind of image with data.suffix, or rename a misnamed file.")
    if problems:
        raise MRIFileError(path, problems, " ".join(hints))
    if path.stat().st_size == 0:
        raise MRIFileError(path, ["empty file (0 bytes)"], "Re-copy or re-export it.")


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel "fixes" some header faults on load and logs them; we check (and report)
    them ourselves, so its messages are held back while loading."""
    nib_logger = logging.getLogger("nibabel.global")
    level = nib_logger.level
    nib_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nib_logger.setLevel(level)


def _looks_nifti(path: Path) -> bool:
    """Whether the file starts with a NIfTI-1/2 header size (either byte order)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return len(head) == 4 and any(
        int.from_bytes(head, order) in (348, 540) for order in ("little", "big")
    )


def _open(path: Path) -> nib.Nifti1Image:
    import nibabel as nib

    try:
        with _quiet_nibabel():
            img = nib.load(path, mmap=False)
    except Exception as err:  # nibabel raises many kinds for a damaged header
        text = str(err).replace(str(path), path.name)
        gz = nifti_extension(path) == ".nii.gz"
        if gz and "not a gzip file" in text and _looks_nifti(path):
            problem = "an uncompressed NIfTI file named .nii.gz"
            hint = "Rename it to .nii, or compress it with gzip."
        else:
            problem = f"not a readable NIfTI file ({type(err).__name__}: {text})"
            hint = "Re-copy or re-export it as NIfTI-1/2 (.nii or .nii.gz)."
        raise MRIFileError(path, [problem], hint) from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MRIFileError(
            path, [f"nibabel reads it as {type(img).__name__}, not as a NIfTI image"],
            "Convert it to NIfTI (.nii or .nii.gz).",
        )
    return img


def _raw_header(path: Path, img: nib.Nifti1Image) -> nib.Nifti1Header:
    """The header as written, without nibabel's load-time fixes (zero pixdim -> 1...)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(path) as fobj:
        return type(img).header_class.from_fileobj(fobj, check=False)  # type: ignore[no-any-return]


def _check_header(
    path: Path, img: nib.Nifti1Image, raw: nib.Nifti1Header, suffix: str | None
) -> tuple[list[str], list[str], np.ndarray | None]:
    """(problems, notes, affine in mm or None)."""
    import nibabel as nib

    problems: list[str] = []
    notes: list[str] = []
    shape = tuple(int(s) for s in img.shape)
    ndim = len(shape)
    if ndim < 3:
        problems.append(
            f"is {ndim}-D (shape {shape}): an MRI volume needs three spatial dimensions"
        )
    elif ndim > 4:
        problems.append(
            f"is {ndim}-D (shape {shape}): only 3-D anatomical and 4-D functional (time "
            "last) images are supported"
        )
    if any(s == 0 for s in shape):
        problems.append(f"has a zero-size dimension (shape {shape})")
    elif math.prod(shape) > MAX_VOXELS:
        problems.append(
            f"its header declares {math.prod(shape):,} voxels (shape {shape}), more than "
            f"{MAX_VOXELS:,}: a corrupt dim[] field"
        )
    if ndim == 4 and shape[3] > 0:
        if suffix in ANAT_SUFFIXES and shape[3] > 1:
            problems.append(
                f"is 4-D with {shape[3]} volumes but a {suffix} image must be 3-D"
            )
        elif suffix in ANAT_SUFFIXES:
            notes.append("4-D with a single volume: used as 3-D")
    if ndim == 3 and suffix in FUNC_SUFFIXES:
        problems.append(f"is 3-D (shape {shape}) but a {suffix} run must be 4-D (x, y, z, time)")

    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.fields is not None:
        problems.append(
            f"data type {dtype} is not real-valued scalar (complex or RGB): export "
            "magnitude images"
        )

    # Geometry: nibabel takes the sform if its code is set, otherwise the qform (built from
    # pixdim), otherwise pixdim alone. pixdim faults matter unless the sform is used.
    pixdim = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    sform_code = int(raw["sform_code"])
    qform_code = int(raw["qform_code"])
    bad_pixdim = not np.all(np.isfinite(pixdim)) or bool(np.any(pixdim <= 0))
    if bad_pixdim and sform_code == 0:
        problems.append(
            f"voxel sizes pixdim[1:4] = {pixdim.tolist()} are zero, negative or not finite, "
            "and the header has no sform to take the geometry from"
        )
    elif bad_pixdim:
        notes.append(f"pixdim[1:4] = {pixdim.tolist()} is invalid; geometry from the sform")
    try:
        unit = img.header.get_xyzt_units()[0]
    except KeyError:  # nibabel looks the code up in its table; a corrupt byte is not there
        problems.append(f"xyzt_units = {int(raw['xyzt_units'])} is not a NIfTI unit code: the header is corrupt")
        unit = "unknown"
    factor = _UNIT_TO_MM.get(unit, 1.0)
    if unit == "unknown":
        notes.append("spatial unit not set in the header: millimetres assumed")
    elif unit != "mm":
        notes.append(f"spatial unit {unit!r} converted to mm")

    affine: np.ndarray | None = None
    if not (bad_pixdim and sform_code == 0):
        aff = np.asarray(img.affine, dtype=np.float64)
        if not np.all(np.isfinite(aff)):
            problems.append(f"the affine (sform/qform) has non-finite entries: {aff.tolist()}")
        else:
            aff = aff.copy()
            aff[:3, :] *= factor
            rzs = aff[:3, :3]
            vox = np.linalg.norm(rzs, axis=0)
            det = abs(float(np.linalg.det(rzs)))
            if np.any(vox == 0) or det <= 1e-6 * float(np.prod(vox)):
                problems.append(
                    f"the affine is singular (|det| = {det:.3g}; voxel axes of length "
                    f"{np.round(vox, 4).tolist()} mm are zero or linearly dependent), so "
                    "voxels have no place in space"
                )
            elif np.any(vox < MIN_VOXEL_MM) or np.any(vox > MAX_VOXEL_MM):
                problems.append(
                    f"voxel size {np.round(vox, 4).tolist()} mm (header unit {unit!r}) is "
                    f"implausible for MRI (expected {MIN_VOXEL_MM}..{MAX_VOXEL_MM} mm)"
                )
            else:
                affine = aff
    if sform_code > 0 and qform_code > 0:
        try:
            diff = float(np.abs(img.header.get_sform() - img.header.get_qform()).max())
        except ValueError as err:  # a quaternion that is not a rotation; the sform is used anyway
            notes.append(f"the qform is invalid ({err}); the sform was used")
            diff = 0.0
        if np.isfinite(diff) and diff > 0.5:
            notes.append(f"sform and qform disagree (by up to {diff:.3g}); the sform was used")
    if affine is not None:
        oblique = float(np.degrees(np.max(nib.affines.obliquity(affine))))
        if oblique > np.degrees(_OBLIQUE_RAD):
            notes.append(f"oblique by {oblique:.1f} deg: resampled onto a RAS-aligned grid")

    if nifti_extension(path) == ".nii" and ndim >= 3 and not any(s == 0 for s in shape):
        offset = int(raw["vox_offset"])
        expected = offset + math.prod(shape) * dtype.itemsize
        size = path.stat().st_size
        if size < expected:
            problems.append(
                f"header/data size mismatch: the header declares {shape} {dtype} voxels "
                f"({expected - offset:,} bytes after offset {offset}) but the file holds "
                f"{max(size - offset, 0):,} (truncated copy or wrong dim[]/datatype)"
            )
    return problems, notes, affine


def _read_data(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    try:
        return np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as err:  # EOFError, zlib.error, OSError from a damaged stream
        text = str(err).replace(str(path), path.name).replace("\n", " ")
        raise MRIFileError(
            path,
            [f"image data cannot be read ({type(err).__name__}: {text}): the file is "
             "truncated or corrupt"],
            "Re-copy or re-export it (an interrupted transfer truncates .nii.gz files).",
        ) from err


def _check_data(data: np.ndarray) -> list[str]:
    finite = np.isfinite(data)
    n_bad = int(data.size - np.count_nonzero(finite))
    problems = []
    if n_bad:
        problems.append(
            f"{n_bad:,} of {data.size:,} voxels are NaN or infinite (set them to 0 or "
            "re-export the image)"
        )
    values = data[finite] if n_bad else data
    if values.size and float(values.max()) == float(values.min()):
        problems.append(f"every voxel has the value {float(values.min()):g}: a blank image")
    return problems


def read_nifti(path: str | Path, *, suffix: str | None = None) -> NiftiVolume:
    """Read and check one NIfTI-1/2 image; raise ``MRIFileError`` naming every problem.

    ``suffix`` (``"T1w"``, ``"bold"``...) is what the caller expects: a BIDS-named file
    with another suffix is refused, anatomical images must be 3-D (a 4-D image with one
    volume is squeezed), bold runs 4-D. With ``suffix=None`` any 3-D or 4-D image passes.
    """
    import nibabel as nib

    path = Path(path)
    _check_path(path, suffix)
    img = _open(path)
    try:
        raw = _raw_header(path, img)
    except Exception as err:  # pragma: no cover - nibabel just read this header
        raise MRIFileError(path, [f"header cannot be re-read ({err})"]) from err
    problems, notes, affine = _check_header(path, img, raw, suffix)
    if problems:
        hint = (
            "Fix the header (dim, pixdim, sform/qform) or re-export the image from its "
            "source (e.g. dcm2niix)."
        )
        if any("must be 3-D" in p or "must be 4-D" in p for p in problems):
            hint += " If it is another kind of image, set data.suffix to its kind."
        raise MRIFileError(path, problems, hint)
    assert affine is not None
    data = _read_data(path, img)
    problems = _check_data(data)
    if problems:
        raise MRIFileError(path, problems, "Fix or re-export the image.")
    if data.ndim == 4 and data.shape[3] == 1 and suffix in ANAT_SUFFIXES:
        data = data[..., 0]
    tr: float | None = None
    if data.ndim == 4:
        zoom_t = float(img.header.get_zooms()[3])
        t_unit = img.header.get_xyzt_units()[1]
        tr = zoom_t * _TIME_TO_S[t_unit] if t_unit in _TIME_TO_S and zoom_t > 0 else None
        if tr is not None and tr > 60:
            notes.append(f"repetition time {tr:g} s is implausible (milliseconds labelled s?)")
    info = SourceInfo(
        file=path.name,
        format=type(img).__name__.replace("Image", "").replace("Nifti", "NIfTI-"),
        shape=tuple(int(s) for s in img.shape),
        dtype=str(img.get_data_dtype()),
        voxel_size_mm=tuple(  # type: ignore[arg-type]
            round(float(v), 5) for v in np.linalg.norm(affine[:3, :3], axis=0)
        ),
        orientation="".join(nib.aff2axcodes(affine)),
        oblique_deg=round(float(np.degrees(np.max(nib.affines.obliquity(affine)))), 3),
        n_volumes=int(data.shape[3]) if data.ndim == 4 else 1,
        repetition_time_s=tr,
        problems=tuple(notes),
    )
    return NiftiVolume(path=path, data=data, affine=affine, info=info)


def _participant_dir(participant_id: str) -> str:
    return participant_id if participant_id.startswith("sub-") else f"sub-{participant_id}"


def mri_paths_for(bids_root: str | Path, participant_id: str, spec: MRIDataSpec) -> list[Path]:
    """NIfTI files of ``participant_id`` with ``spec.suffix`` (and its session/task), sorted.

    Looks in ``sub-<id>/[ses-<label>/]<anat|func>/`` by file name only: no file is opened.
    A loose-file site (a ``recordings.tsv`` with ``path`` and ``participant_id`` at its root,
    as for EEG) lists its NIfTI files there instead.
    """
    from fedneuro.data.loose import find_recordings_table, read_recordings_table

    table = find_recordings_table(Path(bids_root))
    if table is not None:
        return sorted(
            row.path for row in read_recordings_table(table)
            if row.participant_id == participant_id and nifti_extension(row.path) is not None
            and (spec.task is None or row.task == spec.task)
        )
    sub = _participant_dir(participant_id)
    subdir = Path(bids_root) / sub
    if not subdir.is_dir():
        return []
    if spec.session is not None:
        folders = [subdir / f"ses-{spec.session}" / spec.datatype]
    else:
        folders = [subdir / spec.datatype, *sorted(subdir.glob(f"ses-*/{spec.datatype}"))]
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            ext = nifti_extension(path)
            if ext is None or path.name.startswith(".") or path.is_dir():
                continue
            parts = path.name[: -len(ext)].split("_")
            if parts[0] != sub or parts[-1] != spec.suffix:
                continue
            entities = dict(p.split("-", 1) for p in parts[1:-1] if "-" in p)
            if spec.task is not None and entities.get("task") != spec.task:
                continue
            found.append(path)
    return found
