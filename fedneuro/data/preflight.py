"""Header checks that run before MNE opens a file, so that broken files fail with a message
naming the file and the problem instead of a parser's ``KeyError`` or silent repair.

MNE reads a truncated EDF by "inferring from the file size", renames duplicate EDF channel
labels without a word, and stops with ``ZeroDivisionError`` on a BrainVision header whose
sampling interval is 0. Every check here reads headers only (a few kilobytes).
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from fedneuro.data.errors import RecordingReadError

__all__ = ["brainvision_companions", "preflight"]

_BV_BYTES = {"INT_16": 2, "UINT_16": 2, "INT_32": 4, "IEEE_FLOAT_32": 4}
_EDF_ANNOTATIONS = ("EDF Annotations", "BDF Annotations")


def preflight(path: Path, fmt: str) -> None:
    """Check the header(s) of ``path`` in format ``fmt`` (as named by readers.EEG_FORMATS)."""
    path = Path(path)
    if not path.is_file():
        raise RecordingReadError(f"{path.name}: file not found ({path}).")
    if path.stat().st_size == 0:
        raise RecordingReadError(
            f"{path.name}: the file is empty (0 bytes). Copy the recording again from its source."
        )
    if fmt in ("EDF", "BDF"):
        _check_edf(path, fmt)
    elif fmt == "BrainVision":
        _check_brainvision(path)


def _field(raw: bytes, name: str, path: Path, kind: type) -> int | float:
    text = raw.decode("latin-1").strip()
    try:
        return kind(text)
    except ValueError:
        raise RecordingReadError(
            f"{path.name}: the EDF header field '{name}' holds {text!r}, not a number: the "
            "header is corrupt. Re-export the recording from the acquisition software."
        ) from None


def _check_edf(path: Path, fmt: str) -> None:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(256)
        if len(head) < 256:
            raise RecordingReadError(
                f"{path.name}: {size} bytes cannot hold an {fmt} header (256 bytes at least): "
                "the file is truncated or not an EDF/BDF file."
            )
        version = head[:8]
        expected = b"\xffBIOSEMI" if fmt == "BDF" else b"0       "
        if version != expected and not (fmt == "EDF" and version.strip() == b"0"):
            raise RecordingReadError(
                f"{path.name}: does not start with an {fmt} header (version field "
                f"{version!r}, expected {expected!r}). Is it really an {fmt} file?"
            )
        header_bytes = int(_field(head[184:192], "number of bytes in header", path, int))
        n_records = int(_field(head[236:244], "number of data records", path, int))
        record_s = float(_field(head[244:252], "duration of a data record", path, float))
        ns = int(_field(head[252:256], "number of signals", path, int))
        if ns < 1:
            raise RecordingReadError(f"{path.name}: the header declares {ns} signals.")
        if header_bytes != 256 * (ns + 1):
            raise RecordingReadError(
                f"{path.name}: the header says it is {header_bytes} bytes long, but {ns} signals "
                f"need {256 * (ns + 1)}: the header is corrupt."
            )
        rest = fh.read(256 * ns)
    if len(rest) < 256 * ns:
        raise RecordingReadError(
            f"{path.name}: the file ends inside its header ({size} bytes, header "
            f"{header_bytes}): the file is truncated."
        )

    def block(offset: int, width: int) -> list[bytes]:
        start = offset * ns
        return [rest[start + i * width : start + (i + 1) * width] for i in range(ns)]

    labels = [b.decode("latin-1").strip() for b in block(0, 16)]
    dig_min = [_field(b, "digital minimum", path, int) for b in block(16 + 80 + 8 + 8 + 8, 8)]
    dig_max = [_field(b, "digital maximum", path, int) for b in block(16 + 80 + 8 + 8 + 8 + 8, 8)]
    spr = [
        int(_field(b, "number of samples in each data record", path, int))
        for b in block(16 + 80 + 8 + 8 + 8 + 8 + 8 + 80, 8)
    ]
    signals = [i for i, lab in enumerate(labels) if lab not in _EDF_ANNOTATIONS]
    if signals and record_s <= 0:
        raise RecordingReadError(
            f"{path.name}: the data record duration is {record_s} s; it must be > 0 for a file "
            "with signals (the sampling rate is samples per record / record duration). The "
            "header is corrupt: re-export the recording."
        )
    names = [labels[i] for i in signals]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RecordingReadError(
            f"{path.name}: channel label(s) {dupes} appear more than once (labels: {names}). "
            "Which one to use would be a guess: rename or drop the duplicates before export."
        )
    bad_spr = [labels[i] for i in range(ns) if spr[i] < 1]
    if bad_spr:
        raise RecordingReadError(
            f"{path.name}: signal(s) {bad_spr} have {min(spr)} samples per data record; "
            "every signal needs at least 1. The header is corrupt."
        )
    flat_range = [labels[i] for i in signals if dig_max[i] <= dig_min[i]]
    if flat_range:
        raise RecordingReadError(
            f"{path.name}: signal(s) {flat_range} have a digital maximum not above their "
            "digital minimum, so samples cannot be scaled to physical units. The header is "
            "corrupt."
        )
    record_bytes = sum(spr) * (3 if fmt == "BDF" else 2)
    data_bytes = size - header_bytes
    whole, spare = divmod(data_bytes, record_bytes)
    if n_records == -1:  # allowed while recording: the reader counts the records
        if whole < 1:
            raise RecordingReadError(f"{path.name}: no complete data record after the header.")
        return
    if n_records < 1:
        raise RecordingReadError(
            f"{path.name}: the header declares {n_records} data records; nothing to read."
        )
    expected_size = header_bytes + n_records * record_bytes
    if size < expected_size:
        raise RecordingReadError(
            f"{path.name}: truncated: the header declares {n_records} data records "
            f"({expected_size} bytes) but the file has {size} bytes ({whole} complete "
            "records). Copy the recording again; if the recorder crashed, repair the header "
            "with EDF tools before using it."
        )
    if size > expected_size:
        raise RecordingReadError(
            f"{path.name}: the header declares {n_records} data records ({expected_size} "
            f"bytes) but the file has {size} bytes ({whole} complete records"
            + (f" and {spare} stray bytes" if spare else "")
            + "): the header's record count is wrong. Fix the 'number of data records' "
            "field (bytes 236-244) or re-export the recording."
        )


def _ini(path: Path, kind: str) -> configparser.ConfigParser:
    text = path.read_text(encoding="utf-8", errors="replace")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not re.match(rf"Brain ?Vision (Data Exchange|Core Data Format) {kind} File", first):
        raise RecordingReadError(
            f"{path.name}: not a BrainVision {kind.lower()} file (first line {first[:60]!r}, "
            f"expected 'Brain Vision Data Exchange {kind} File ...')."
        )
    body = text[text.index(first) + len(first) :]
    cfg = configparser.ConfigParser(interpolation=None, strict=False)
    cfg.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        cfg.read_string(body.split("[Comment]")[0])
    except configparser.Error as err:
        raise RecordingReadError(f"{path.name}: malformed {kind.lower()} file: {err}") from None
    return cfg


def brainvision_companions(vhdr: Path) -> tuple[Path, Path | None]:
    """(data file, marker file or None) named by a BrainVision header."""
    cfg = _ini(vhdr, "Header")
    common = cfg["Common Infos"] if cfg.has_section("Common Infos") else {}
    data = common.get("DataFile")
    if not data:
        raise RecordingReadError(
            f"{vhdr.name}: the header has no DataFile entry in [Common Infos], so the signal "
            "file is unknown. Add 'DataFile=<name>.eeg'."
        )
    marker = common.get("MarkerFile")
    return vhdr.parent / data.strip(), (vhdr.parent / marker.strip()) if marker else None


def _check_brainvision(vhdr: Path) -> None:
    data, marker = brainvision_companions(vhdr)
    cfg = _ini(vhdr, "Header")
    common = cfg["Common Infos"]
    try:
        n_ch = int(common.get("NumberOfChannels", ""))
        interval = float(common.get("SamplingInterval", ""))
    except ValueError:
        raise RecordingReadError(
            f"{vhdr.name}: NumberOfChannels and SamplingInterval must be numbers, got "
            f"{common.get('NumberOfChannels')!r} and {common.get('SamplingInterval')!r}."
        ) from None
    if n_ch < 1 or not interval > 0:
        raise RecordingReadError(
            f"{vhdr.name}: NumberOfChannels={n_ch} and SamplingInterval={interval} µs: both "
            "must be positive (the sampling rate is 1e6 / SamplingInterval)."
        )
    chans = cfg["Channel Infos"] if cfg.has_section("Channel Infos") else {}
    names = [v.split(",")[0].strip() for k, v in chans.items() if re.fullmatch(r"Ch\d+", k)]
    if len(names) != n_ch:
        raise RecordingReadError(
            f"{vhdr.name}: NumberOfChannels={n_ch} but [Channel Infos] lists {len(names)}."
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RecordingReadError(
            f"{vhdr.name}: channel name(s) {dupes} appear more than once. Which one to use "
            "would be a guess: rename or drop the duplicates."
        )
    fmt = (
        cfg["Binary Infos"].get("BinaryFormat", "INT_16")
        if cfg.has_section("Binary Infos")
        else "INT_16"
    ).strip()
    if common.get("DataFormat", "BINARY").strip().upper() == "BINARY":
        if fmt not in _BV_BYTES:
            raise RecordingReadError(
                f"{vhdr.name}: BinaryFormat {fmt!r} is not supported (supported: "
                f"{sorted(_BV_BYTES)})."
            )
        if not data.is_file():
            raise RecordingReadError(
                f"{vhdr.name}: its data file {data.name} is missing. Copy it next to the header."
            )
        size = data.stat().st_size
        frame = n_ch * _BV_BYTES[fmt]
        if size == 0 or size % frame:
            raise RecordingReadError(
                f"{data.name}: {size} bytes is not a whole number of samples of {n_ch} "
                f"channels x {_BV_BYTES[fmt]} bytes ({fmt}): the data file is truncated or "
                "does not belong to this header."
            )
    elif not data.is_file():
        raise RecordingReadError(
            f"{vhdr.name}: its data file {data.name} is missing. Copy it next to the header."
        )
    if marker is not None:
        _check_markers(vhdr, marker)


def _check_markers(vhdr: Path, vmrk: Path) -> None:
    if not vmrk.is_file():
        raise RecordingReadError(
            f"{vhdr.name}: its marker file {vmrk.name} is missing. Copy it next to the header, "
            "or remove the MarkerFile line if the recording has no markers."
        )
    cfg = _ini(vmrk, "Marker")
    if not cfg.has_section("Marker Infos"):
        return
    for key, value in cfg["Marker Infos"].items():
        if not re.fullmatch(r"Mk\d+", key):
            continue
        fields = value.split(",")
        if len(fields) < 3 or not fields[2].strip().lstrip("-").isdigit():
            raise RecordingReadError(
                f"{vmrk.name}: marker {key}={value!r} has no integer position (3rd field): "
                "the marker file is corrupt."
            )
        if int(fields[2]) < 1:
            raise RecordingReadError(
                f"{vmrk.name}: marker {key} is at position {fields[2]}; positions start at 1."
            )
