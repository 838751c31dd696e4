"""The on-disk window cache: keyed by content + settings + contract, atomic, self-checking."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedneuro.data import cache as cache_mod
from fedneuro.data.bids import eligible_participants, read_participants
from fedneuro.data.cache import CachedRecording, WindowCache
from fedneuro.data.harmonise import load_site_windows
from fedneuro.data.spec import DataSpec, InputContract

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module")
def small_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedneuro.data.synth import DEFAULT_PROFILES, synthesize_site

    return synthesize_site(tmp_path_factory.mktemp("small"), DEFAULT_PROFILES[1],
                           n_participants=5, duration_s=12.0, seed=11)


@pytest.fixture()
def site(tmp_path: Path, small_site: Path) -> Path:
    root = tmp_path / "site"
    shutil.copytree(small_site, root)
    return root


def _load(root: Path, contract: InputContract, spec: DataSpec, cache: Path):  # type: ignore[no-untyped-def]
    cohort = eligible_participants(read_participants(root, spec), spec)
    return load_site_windows(root, cohort, contract, spec, cache_dir=cache)


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.win"))


def test_cached_reload_is_identical(site: Path, tmp_path: Path, data_contract: InputContract,
                                    data_spec: DataSpec) -> None:
    cache = tmp_path / "cache"
    first = _load(site, data_contract, data_spec, cache)
    assert first.report.cache_hits == 0 and len(_entries(cache)) == len(first.report.recordings)
    again = _load(site, data_contract, data_spec, cache)
    assert again.report.cache_hits == len(again.report.recordings)
    np.testing.assert_array_equal(first.X, again.X)
    np.testing.assert_array_equal(first.y, again.y)
    assert first.participant_ids == again.participant_ids
    assert first.report.recordings == again.report.recordings  # reports survive the cache
    plain = load_site_windows(site, eligible_participants(read_participants(site, data_spec),
                                                          data_spec), data_contract, data_spec)
    np.testing.assert_array_equal(plain.X, again.X)


def test_key_follows_content_settings_and_contract(
    site: Path, tmp_path: Path, data_contract: InputContract, data_spec: DataSpec
) -> None:
    cache = tmp_path / "cache"
    ws = _load(site, data_contract, data_spec, cache)
    n = len(ws.report.recordings)
    # Settings that do not shape windows reuse every entry ...
    same = data_spec.model_copy(update={"test_fraction": 0.5, "consent_values": ["yes", "y"]})
    assert _load(site, data_contract, same, cache).report.cache_hits == n
    # ... preprocessing settings and the contract do not.
    assert _load(site, data_contract, DataSpec(l_freq=1.0), cache).report.cache_hits == 0
    other = InputContract(channels=data_contract.channels, sfreq=100.0, input_window_seconds=4.0)
    assert _load(site, other, data_spec, cache).report.cache_hits == 0
    # Changing one file's content (a sidecar counts) recomputes that recording only.
    edf = site / ws.report.recordings[0].file
    blob = bytearray(edf.read_bytes())
    blob[-10] ^= 0xFF
    edf.write_bytes(bytes(blob))
    channels = site / ws.report.recordings[1].file.replace("_eeg.edf", "_channels.tsv")
    channels.write_text(channels.read_text() + "\n")
    assert _load(site, data_contract, data_spec, cache).report.cache_hits == n - 2


@pytest.mark.parametrize("damage", ["flip-payload", "truncate", "garbage", "empty"])
def test_corrupt_entry_is_discarded_and_recomputed(
    damage: str, site: Path, tmp_path: Path, data_contract: InputContract, data_spec: DataSpec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    first = _load(site, data_contract, data_spec, cache)
    entry = _entries(cache)[0]
    blob = bytearray(entry.read_bytes())
    if damage == "flip-payload":
        blob[-5] ^= 0x01
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "garbage":
        blob = bytearray(b"not a cache entry" * 10)
    else:
        blob = bytearray()
    entry.write_bytes(bytes(blob))
    again = _load(site, data_contract, data_spec, cache)
    assert again.report.cache_hits == len(first.report.recordings) - 1
    np.testing.assert_array_equal(first.X, again.X)
    assert "is corrupt" in caplog.text and "recomputing" in caplog.text
    # The bad entry was replaced by a good one.
    assert _load(site, data_contract, data_spec, cache).report.cache_hits == len(
        first.report.recordings)


def test_interrupted_write_leaves_no_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wc = WindowCache(tmp_path / "cache")
    entry = CachedRecording(X=np.ones((2, 3, 4), np.float32), y=np.array([0, 1]), report={"a": 1})
    key = "ab" * 32

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process is stopped between write and rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        wc.store(key, entry)
    monkeypatch.undo()
    assert wc.load(key) is None
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    # A temp file left by a killed process is never taken for an entry.
    (wc.path(key).parent / f".{key[:16]}.zzzz.tmp").write_bytes(b"half")
    assert wc.load(key) is None
    wc.store(key, entry)
    got = wc.load(key)
    assert got is not None and got.report == {"a": 1}
    np.testing.assert_array_equal(got.X, entry.X)
    np.testing.assert_array_equal(got.y, entry.y)


def test_store_fsyncs_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    wc = WindowCache(tmp_path)
    wc.store("cd" * 32, CachedRecording(np.zeros((1, 1, 1), np.float32), np.zeros(0), {}))
    assert len(synced) == 2


def test_key_hashes_content_not_names(tmp_path: Path, data_spec: DataSpec,
                                      data_contract: InputContract) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x.edf").write_bytes(b"1234")
    (b / "x.edf").write_bytes(b"1234")
    wc = WindowCache(tmp_path / "c")
    assert wc.key([a / "x.edf"], data_spec, data_contract) == wc.key(
        [b / "x.edf"], data_spec, data_contract)
    (b / "x.edf").write_bytes(b"1235")
    assert wc.key([a / "x.edf"], data_spec, data_contract) != wc.key(
        [b / "x.edf"], data_spec, data_contract)
    assert cache_mod.preprocessing_settings(data_spec)["reference"] == "average"
    assert "classes" not in cache_mod.preprocessing_settings(data_spec)
    ev = DataSpec(label_source="events")  # event classes shape the windows' labels
    assert "classes" in cache_mod.preprocessing_settings(ev)


def test_benchmark_script_runs(capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import runpy

    script = Path(__file__).parents[1] / "benchmarks" / "data_cache.py"
    monkeypatch.setattr("sys.argv", [str(script), "--participants", "4", "--duration", "12",
                                     "--repeats", "1", "--json"])
    runpy.run_path(str(script), run_name="__main__")
    result = json.loads(capsys.readouterr().out)
    assert result["windows"] > 0 and result["ratio_first_over_cached"] > 1
