"""One checked image -> model-ready samples under an encoder's ``MRIContract``.

Steps: reorient to RAS+ (``nibabel.as_closest_canonical``: flips/permutations only, no
interpolation); for bold runs drop the initial volumes and make the temporal summary or
keep every volume; find the head with an Otsu threshold; then ONE trilinear resampling
(``scipy.ndimage.affine_transform``) onto the contract's grid - voxel size and centred
crop/pad together, so the data is interpolated once and an oblique acquisition is
straightened in the same pass. Downsampling is preceded by a Gaussian anti-aliasing
filter (sigma = (factor - 1) / 2 source voxels, as scikit-image's ``resize``). Finally the
intensities are normalised with statistics of the source image's head voxels, so they do
not depend on how much of the field of view the contract keeps.

nibabel.processing.resample_from_to does the same resampling (it also calls
``affine_transform``) but without anti-aliasing and one image at a time; calling scipy
directly lets a bold run reuse one transform for all volumes.
"""

from __future__ import annotations

import logging

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedneuro.data.mri_read import MRIFileError, NiftiVolume, SourceInfo
from fedneuro.data.mri_spec import MRIContract, MRIDataSpec

__all__ = [
    "VolumeReport",
    "foreground_mask",
    "harmonise_volume",
    "otsu_threshold",
    "target_affine",
]

logger = logging.getLogger(__name__)

# Report a crop that loses more than this fraction of the head (refusal is the spec's).
_KEPT_NOTE = 0.98
# Report upsampling beyond this factor (the model then sees interpolated detail).
_UPSAMPLE_NOTE = 2.0


class VolumeReport(BaseModel):
    """What harmonisation did to one image file.

    ``centre_mm`` is the world point at the centre of the output grid; ``foreground_kept``
    the fraction of the head's voxels inside the grid; ``intensity_offset``/``_scale``
    (one per output channel) map source values v to (v - offset) / scale. ``problems``
    holds the source's notes and harmonisation's (usable, but worth a look).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    participant_id: str | None = None
    source: SourceInfo
    n_volumes_used: int
    n_outputs: int
    centre_mm: tuple[float, float, float]
    foreground_kept: float
    intensity_offset: tuple[float, ...]
    intensity_scale: tuple[float, ...]
    problems: tuple[str, ...] = ()


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of an image's histogram, robust to a few hot voxels (values above
    the 99.9th percentile do not stretch the histogram)."""
    values = image.ravel()
    if values.size > 200_000:  # a regular subsample gives the same histogram shape
        values = values[:: values.size // 200_000]
    lo, hi = float(values.min()), float(np.percentile(values, 99.9))
    if not hi > lo:
        hi = float(values.max())
    if not hi > lo:
        return lo
    hist, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist, dtype=np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        m0 = s0 / w0
        m1 = (s0[-1] - s0) / w1
        between = w0 * w1 * (m0 - m1) ** 2
    k = int(np.nanargmax(between[:-1]))
    return float(edges[k + 1])


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Voxels above the Otsu threshold: the head (scalp, skull marrow and brain)."""
    return image > otsu_threshold(image)


def target_affine(contract: MRIContract, centre_mm: np.ndarray) -> np.ndarray:
    """Voxel -> world (RAS+, mm) affine of the contract's grid centred on ``centre_mm``."""
    vox = np.asarray(contract.voxel_size_mm, dtype=np.float64)
    shape = np.asarray(contract.shape, dtype=np.float64)
    aff = np.diag([*vox, 1.0])
    aff[:3, 3] = np.asarray(centre_mm, dtype=np.float64) - vox * (shape - 1) / 2
    return aff


def _intensity(
    image: np.ndarray, mask: np.ndarray, spec: MRIDataSpec
) -> tuple[float, float] | None:
    """(offset, scale) of the normalisation, None when the image has no contrast."""
    if spec.intensity_normalisation == "none":
        return 0.0, 1.0
    if spec.intensity_normalisation == "minmax":
        lo, hi = np.percentile(image, spec.minmax_percentiles)
        return (float(lo), float(hi - lo)) if hi > lo else None
    head = image[mask]
    scale = float(head.std())
    return (float(head.mean()), scale) if scale > 0 else None


def _resample(
    image: np.ndarray, matrix: np.ndarray, sigma: np.ndarray, shape: tuple[int, int, int],
    cval: float,
) -> np.ndarray:
    from scipy import ndimage

    if np.any(sigma > 0.05):
        image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    return ndimage.affine_transform(
        np.ascontiguousarray(image, dtype=np.float32), matrix[:3, :3], offset=matrix[:3, 3],
        output_shape=shape, order=1, mode="constant", cval=cval, prefilter=False,
    )


def harmonise_volume(
    volume: NiftiVolume, contract: MRIContract, spec: MRIDataSpec
) -> tuple[np.ndarray, VolumeReport]:
    """Bring one image to ``contract``: samples ``(n, C, x, y, z)`` float32 and a report.

    ``n`` is 1, except for a bold run with ``fmri_mode="volumes"`` (one per volume kept).
    Raises ``MRIFileError`` (naming the file) when the image does not fit the spec or the
    contract's field of view keeps less than ``spec.min_foreground_kept`` of the head;
    ``ValueError`` when ``spec`` cannot feed ``contract`` at all.
    """
    import nibabel as nib

    spec.check_contract(contract)
    path, data = volume.path, volume.data
    want = 4 if spec.datatype == "func" else 3
    if data.ndim != want:
        raise MRIFileError(
            path,
            [f"is {data.ndim}-D (shape {data.shape}) but suffix {spec.suffix!r} needs "
             f"{want}-D images"],
            "Set data.suffix to the kind of image this is.",
        )
    canon = nib.as_closest_canonical(nib.Nifti1Image(data, volume.affine))
    cdata = np.asanyarray(canon.dataobj)
    src_affine = canon.affine
    notes = list(volume.info.problems)

    n_used = 1
    if cdata.ndim == 4:
        n_total = cdata.shape[3]
        series = cdata[..., spec.drop_initial_volumes :]
        n_used = series.shape[3]
        if n_used == 0:
            raise MRIFileError(
                path,
                [f"has {n_total} volumes and drop_initial_volumes={spec.drop_initial_volumes}"
                 " leaves none"],
                "Lower data.drop_initial_volumes.",
            )
        reference = series.mean(axis=3)
        if spec.fmri_mode == "volumes":
            channels = [series[..., t] for t in range(n_used)]
        elif spec.fmri_mode == "std":
            channels = [series.std(axis=3)]
        elif spec.fmri_mode == "mean_std":
            channels = [reference, series.std(axis=3)]
        else:
            channels = [reference]
    else:
        reference = cdata
        channels = [cdata]

    mask = foreground_mask(reference)
    if not mask.any():
        raise MRIFileError(path, ["no foreground (head) voxels found"], "Check the image.")
    if spec.crop_centre == "foreground":
        centre_vox = np.array(np.nonzero(mask)).mean(axis=1)
    else:
        centre_vox = (np.array(reference.shape, dtype=np.float64) - 1) / 2
    centre = src_affine[:3, :3] @ centre_vox + src_affine[:3, 3]
    tgt_affine = target_affine(contract, centre)
    matrix = np.linalg.inv(src_affine) @ tgt_affine  # output voxel -> source voxel

    # Fraction of head voxels that land inside the output grid.
    to_target = np.linalg.inv(tgt_affine) @ src_affine
    ijk = np.array(np.nonzero(mask), dtype=np.float64)
    pos = to_target[:3, :3] @ ijk + to_target[:3, 3:4]
    shape = np.asarray(contract.shape)[:, None]
    kept = float(np.mean(np.all((pos >= -0.5) & (pos <= shape - 0.5), axis=0)))
    if kept < spec.min_foreground_kept:
        raise MRIFileError(
            path,
            [f"the contract's field of view {contract.field_of_view_mm} mm keeps only "
             f"{kept:.0%} of the head (data.min_foreground_kept = {spec.min_foreground_kept})"],
            "Use an encoder contract with a larger field of view, or check the image's "
            "voxel sizes.",
        )
    if kept < _KEPT_NOTE:
        notes.append(f"the output grid crops {1 - kept:.0%} of the head")

    src_vox = np.linalg.norm(src_affine[:3, :3], axis=0)
    factor = np.asarray(contract.voxel_size_mm) / src_vox
    sigma = np.maximum(0.0, (factor - 1.0) / 2.0)
    if np.any(factor < 1 / _UPSAMPLE_NOTE):
        notes.append(
            f"upsampled from {np.round(src_vox, 2).tolist()} mm voxels by up to "
            f"{1 / factor.min():.1f}x"
        )

    stats_sources = channels if spec.fmri_mode != "volumes" else [reference]
    stats = [_intensity(img, mask, spec) for img in stats_sources]
    if any(s is None for s in stats):
        raise MRIFileError(
            path, ["no intensity variation inside the head (cannot normalise)"],
            "Check the image, or set data.intensity_normalisation = 'none'.",
        )
    offsets = [s[0] for s in stats]  # type: ignore[index]
    scales = [s[1] for s in stats]  # type: ignore[index]
    out = np.empty((len(channels) if spec.fmri_mode == "volumes" else 1, spec.n_channels,
                    *contract.shape), dtype=np.float32)
    for k, image in enumerate(channels):
        background = float(np.median(image[~mask])) if not mask.all() else 0.0
        res = _resample(image, matrix, sigma, contract.shape, background)
        j = 0 if spec.fmri_mode == "volumes" else k
        res = (res - offsets[j]) / scales[j]
        if spec.intensity_normalisation == "minmax":
            np.clip(res, 0.0, 1.0, out=res)
        if spec.fmri_mode == "volumes":
            out[k, 0] = res
        else:
            out[0, k] = res
    if not np.isfinite(out).all():  # pragma: no cover - inputs were checked finite
        raise MRIFileError(path, ["harmonised volume contains NaN or inf values"])
    report = VolumeReport(
        file=path.name,
        source=volume.info,
        n_volumes_used=n_used,
        n_outputs=len(out),
        centre_mm=tuple(round(float(c), 3) for c in centre),  # type: ignore[arg-type]
        foreground_kept=round(kept, 4),
        intensity_offset=tuple(offsets),
        intensity_scale=tuple(scales),
        problems=tuple(notes),
    )
    return out, report
