"""Cached reload vs first decode + preprocess of a synthetic site's EEG windows.

Writes one synthetic hospital (BIDS, EDF), then, side by side in one run, loads its
windows (1) without a cache, (2) into an empty cache (decode + preprocess + store) and
(3) from the warm cache, best of ``--repeats`` each. Prints windows/s and the ratio of (1)
to (3). Usage::

    python benchmarks/data_cache.py [--participants 8] [--duration 120] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from fedneuro.data.bids import eligible_participants, read_participants
    from fedneuro.data.harmonise import load_site_windows
    from fedneuro.data.spec import DataSpec, InputContract
    from fedneuro.data.synth import DEFAULT_PROFILES, STANDARD_1020_19, synthesize_site

    profile = DEFAULT_PROFILES[args.site]
    root = synthesize_site(
        work / "data", profile, n_participants=args.participants, duration_s=args.duration,
        seed=args.seed,
    )
    spec = DataSpec()
    contract = InputContract(channels=STANDARD_1020_19, sfreq=200.0, input_window_seconds=4.0)
    cohort = eligible_participants(read_participants(root, spec), spec)
    cache = work / "cache"

    def cold() -> Any:
        shutil.rmtree(cache, ignore_errors=True)
        return load_site_windows(root, cohort, contract, spec, cache_dir=cache)

    t_plain, ws = _best(lambda: load_site_windows(root, cohort, contract, spec), args.repeats)
    t_cold, _ = _best(cold, args.repeats)
    t_warm, ws_warm = _best(
        lambda: load_site_windows(root, cohort, contract, spec, cache_dir=cache), args.repeats
    )
    assert ws_warm.report.cache_hits == len(ws_warm.report.recordings)
    assert (ws.X == ws_warm.X).all()
    n = len(ws)
    return {
        "site": profile.name,
        "source_sfreq": profile.sfreq,
        "recordings": len(ws.report.recordings),
        "seconds_per_recording": args.duration,
        "windows": n,
        "first_decode_preprocess_s": round(t_plain, 4),
        "first_with_cache_store_s": round(t_cold, 4),
        "cached_reload_s": round(t_warm, 4),
        "windows_per_s_first": round(n / t_plain, 1),
        "windows_per_s_cached": round(n / t_warm, 1),
        "ratio_first_over_cached": round(t_plain / t_warm, 1),
        "cache_mb": round(sum(p.stat().st_size for p in cache.rglob("*.win")) / 1e6, 2),
        "repeats": args.repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--participants", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per recording")
    parser.add_argument("--site", type=int, default=2, help="profile index (2: 500 Hz)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedneuro-cache-bench-"))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the result only
            r = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True))
        return
    print(
        f"{r['recordings']} recordings x {args.duration:g} s at {r['source_sfreq']:g} Hz -> "
        f"{r['windows']} windows (best of {args.repeats})\n"
        f"  first decode + preprocess: {r['first_decode_preprocess_s']:8.3f} s "
        f"{r['windows_per_s_first']:10.1f} windows/s\n"
        f"  same, storing the cache:   {r['first_with_cache_store_s']:8.3f} s\n"
        f"  cached reload:             {r['cached_reload_s']:8.3f} s "
        f"{r['windows_per_s_cached']:10.1f} windows/s\n"
        f"  ratio: {r['ratio_first_over_cached']:.1f}x  (cache {r['cache_mb']:.1f} MB)"
    )


if __name__ == "__main__":
    main()
