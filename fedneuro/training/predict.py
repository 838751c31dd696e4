"""Run a trained model on EEG recordings or MRI images: per-recording class probabilities.

The model is an exported model directory (:func:`fedneuro.models.export.load_model_dir`) or
a study file plus its trained adapter (merged in memory). Every recording of a BIDS dataset
(or a loose site with ``recordings.tsv``), or a single EEG file, is read and harmonised
exactly as for training (the study's ``[data]`` section, the backbone's input contract),
cut into fixed-stride windows, and the window probabilities are averaged per recording.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedneuro.data.spec import InputContract
from fedneuro.models.export import (
    LoadedModel,
    ModelCard,
    ModelFileError,
    export_model,
    merge_trained_adapter,
)
from fedneuro.study import Study

if TYPE_CHECKING:
    import mne

    from fedneuro.data.layout import RecordingRef

logger = logging.getLogger(__name__)

class PredictInputError(ValueError):
    """An input path that holds nothing to predict; names the path and what was expected."""


_SUBJECT = re.compile(r"(?:^|[_/\\])(sub-[A-Za-z0-9]+)")


class RecordingPrediction(BaseModel):
    """One recording's prediction (or why there is none)."""

    model_config = ConfigDict(extra="forbid")

    recording: str
    participant: str | None
    n_windows: int
    probabilities: dict[str, float]
    predicted: str | None
    error: str | None = None


def _study_parts(study: Study) -> dict[str, Any]:
    """The study's sections a model card keeps (EEG [data] or MRI [mri], classes, ids)."""
    mri = getattr(study, "mri", None) if getattr(study.study, "modality", "eeg") == "mri" else None
    return {
        "model_spec": study.model,
        "data": study.data,
        "mri": mri,
        "classes": mri.classes if mri is not None else study.data.classes,
        "seed": study.study.seed,
        "study_id": study.study.id,
        "study_digest": study.digest(),
    }


def export_study_model(study: Study, adapter_path: Path, out_dir: Path, *, overwrite: bool = False) -> ModelCard:
    """``fedneuro model export``: merge the study's trained adapter into a model directory."""
    return export_model(**_study_parts(study), adapter_path=adapter_path, out_dir=out_dir, overwrite=overwrite)


def load_study_model(study: Study, adapter_path: Path) -> LoadedModel:
    """The study's model with its trained adapter merged, in memory (no model directory)."""
    module, card = merge_trained_adapter(**_study_parts(study), adapter_path=adapter_path)
    return LoadedModel(module=module, card=card, source=f"{adapter_path} + study {study.study.id}")


def _participant_of(path: Path) -> str | None:
    match = _SUBJECT.search(path.name) or _SUBJECT.search(path.as_posix())
    return match.group(1) if match else None


def _in_bids_dataset(path: Path) -> bool:
    return path.name.startswith("sub-") and any(
        (parent / "dataset_description.json").is_file() for parent in path.parents
    )


def _recordings(model: LoadedModel, source: Path) -> Iterator[tuple[str, str | None, Path | RecordingRef]]:
    """(name, participant, what read_recording / read_eeg_file opens) for every recording."""
    from fedneuro.data.layout import SiteIndex

    assert model.card.data is not None
    if source.is_file():
        yield str(source), _participant_of(source), source
        return
    index = SiteIndex(source)
    found = 0
    for participant in index.participant_ids():
        for ref in index.recordings(participant, model.card.data):
            found += 1
            yield ref.name, ref.participant_id, ref
    if not found:
        task = model.card.data.task
        raise PredictInputError(
            f"no EEG recordings found under {source}: expected a BIDS dataset "
            f"(sub-*/eeg/*_eeg.edf|bdf|vhdr|set) or a recordings.tsv"
            + (f" with recordings of task {task!r} (the study's data.task)" if task else "")
        )


def _open(item: Path | RecordingRef) -> mne.io.BaseRaw:
    from fedneuro.data.harmonise import read_recording
    from fedneuro.data.layout import RecordingRef
    from fedneuro.data.readers import read_eeg_file

    if isinstance(item, RecordingRef):
        return read_recording(item)
    return read_recording(item) if _in_bids_dataset(item) else read_eeg_file(item)


def predict_recordings(
    model: LoadedModel, source: Path, *, device: str = "auto", batch_size: int = 64
) -> list[RecordingPrediction]:
    """Predict every recording under ``source`` (BIDS dataset, loose site, or one EEG file).

    A recording that cannot be read or harmonised gets a row with ``error`` set; the others
    still run. Probabilities are averaged over the recording's windows.
    """
    from fedneuro.data.harmonise import harmonise_recording
    from fedneuro.models.device import device_plan, predict_proba

    card = model.card
    contract = card.contract
    if not isinstance(contract, InputContract):
        return _predict_images(model, Path(source), device=device, batch_size=batch_size)
    if card.data is None:
        raise ModelFileError(f"model {model.source} has no [data] section in its card: export it again from the study")
    source = Path(source)
    if not source.exists():
        raise PredictInputError(f"input {source} does not exist: give a BIDS dataset folder or an EEG file")
    if card.data.label_source == "events":
        logger.warning("the study labels event-locked windows; predictions average fixed-stride windows per recording")
    plan = device_plan(device)
    plan.prepare(model.module)
    logger.info("predicting on %s", plan.description)
    rows: list[RecordingPrediction] = []
    for name, participant, item in _recordings(model, source):
        try:
            raw = _open(item)
            X, report = harmonise_recording(raw, contract, card.data)
        except (ValueError, OSError) as error:  # HarmonisationError / RecordingReadError are ValueErrors
            rows.append(RecordingPrediction(recording=name, participant=participant, n_windows=0,
                                            probabilities={}, predicted=None, error=str(error)))
            continue
        if len(X) == 0:
            notes = "; ".join(report.notes) or "every window was rejected"
            rows.append(RecordingPrediction(recording=name, participant=participant, n_windows=0,
                                            probabilities={}, predicted=None, error=f"no usable window: {notes}"))
            continue
        mean = predict_proba(model.module, X, plan=plan, batch_size=batch_size).mean(axis=0)
        rows.append(RecordingPrediction(
            recording=name, participant=participant, n_windows=len(X),
            probabilities={c: float(p) for c, p in zip(card.class_names, mean)},
            predicted=card.class_names[int(np.argmax(mean))],
        ))
    return rows


def _images(model: LoadedModel, source: Path) -> list[Path]:
    """NIfTI files under ``source``: one file, a BIDS dataset, or a loose site's recordings.tsv."""
    from fedneuro.data.loose import find_recordings_table
    from fedneuro.data.mri_read import mri_paths_for, nifti_extension

    assert model.card.mri is not None
    if source.is_file():
        return [source]
    if find_recordings_table(source) is not None:
        from fedneuro.data.loose import read_recordings_table

        participants = sorted({row.participant_id for row in read_recordings_table(find_recordings_table(source))})  # type: ignore[arg-type]
    else:
        participants = sorted(p.name for p in source.glob("sub-*") if p.is_dir())
    images = [path for pid in participants for path in mri_paths_for(source, pid, model.card.mri)]
    if not images:
        raise PredictInputError(
            f"no {model.card.mri.suffix} images found under {source}: expected a BIDS dataset "
            "(sub-*/anat/*_T1w.nii.gz, …), a recordings.tsv listing NIfTI files, or a .nii/.nii.gz file"
        )
    return [p for p in images if nifti_extension(p) is not None]


def _predict_images(model: LoadedModel, source: Path, *, device: str, batch_size: int) -> list[RecordingPrediction]:
    """MRI: harmonise each image to the encoder's grid and predict it (one or more samples)."""
    from fedneuro.data.mri import load_volume_file
    from fedneuro.models.device import device_plan, predict_proba

    card = model.card
    if card.mri is None:
        raise ModelFileError(f"model {model.source} has no [mri] section in its card: export it again from the study")
    if not source.exists():
        raise PredictInputError(f"input {source} does not exist: give a BIDS dataset folder or a NIfTI file")
    plan = device_plan(device)
    plan.prepare(model.module)
    rows: list[RecordingPrediction] = []
    for path in _images(model, source):
        participant = _participant_of(path)
        try:
            X, _ = load_volume_file(path, card.contract, card.mri)  # type: ignore[arg-type]
        except (ValueError, OSError) as error:  # MRIFileError is a ValueError
            rows.append(RecordingPrediction(recording=str(path), participant=participant, n_windows=0,
                                            probabilities={}, predicted=None, error=str(error)))
            continue
        mean = predict_proba(model.module, X, plan=plan, batch_size=batch_size).mean(axis=0)
        rows.append(RecordingPrediction(
            recording=str(path), participant=participant, n_windows=len(X),
            probabilities={c: float(p) for c, p in zip(card.class_names, mean)},
            predicted=card.class_names[int(np.argmax(mean))],
        ))
    return rows


def write_predictions_csv(rows: list[RecordingPrediction], class_names: list[str], path: Path) -> None:
    """One line per recording: recording, participant, n_windows, p_<class>..., predicted, error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["recording", "participant", "n_windows", *(f"p_{c}" for c in class_names), "predicted", "error"])
        for r in rows:
            probs = [f"{r.probabilities[c]:.6f}" if c in r.probabilities else "" for c in class_names]
            writer.writerow([r.recording, r.participant or "", r.n_windows, *probs, r.predicted or "", r.error or ""])
    tmp.replace(path)
