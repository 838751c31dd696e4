"""Wall time of a simulated study vs the number of sites (Flower's simulation engine, Ray).

    python benchmarks/sites_scaling.py [--sites 5,10,25,50] [--participants 24] [--duration 10]
                                       [--rounds 2] [--plain] [--quick] [--json]

Synthesises the largest consortium once (the generator's three hospital profiles, then
variations of their gain and sensor noise), then runs `fedneuro simulate` as a subprocess on
the first N sites for each N: BIOT-tiny, the demo study's DP, FedAvg and secure aggregation
(``--plain``: without SecAgg+), one local epoch per round. Reports the command's wall time
(Python and Ray start, every site's data harmonised in round 1, every round), the ServerApp's
own time, the first and later rounds, and seconds per site-round = wall time / (N x rounds).

Ray's resources are fedneuro's simulation defaults (every core, 1 CPU per ClientApp actor, so
as many sites train at once as there are cores; Flower's default of 2 CPUs per actor would
run one at a time on a 2-core machine); the JSON says what they were.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedneuro.benchmarking import run_simulate, simulation_resources, site_profiles, study_variant


def _study(work: Path, n_sites: int, args: argparse.Namespace) -> Path:
    from fedneuro.study import default_study_path, load_study

    text = study_variant(default_study_path(), {
        "study": {"id": f"bench-sites-{n_sites}"},
        "model": {"backbone": "biot-tiny"},
        "training": {"local_epochs": 1},
        "federation": {"rounds": args.rounds, "secure_aggregation": {"enabled": not args.plain}},
        # Small synthetic cohorts: keep the study's governance floors below them.
        "governance": {"min_cohort": 10, "min_participants_per_metric": 5},
    })
    path = work / f"study-{n_sites}.toml"
    path.write_text(text, encoding="utf-8")
    load_study(path)  # fails here, with the key, if the variant is invalid
    return path


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from fedneuro.data.synth import synthesize_consortium

    counts = sorted({int(n) for n in args.sites.split(",") if n.strip()})
    if not counts or counts[0] < 1:
        raise SystemExit(f"Invalid value for '--sites': {args.sites!r}; give site counts >= 1, e.g. 5,10,25,50")
    started = time.monotonic()
    profiles = site_profiles(counts[-1])
    sites = synthesize_consortium(work / "data", n_sites=counts[-1], participants_per_site=args.participants,
                                  duration_s=args.duration, seed=args.seed, profiles=profiles)
    synth_s = time.monotonic() - started
    runs = []
    for n in counts:
        study = _study(work, n, args)
        row: dict[str, Any] = {"sites": n, "rounds": args.rounds}
        try:
            summary, seconds, stderr = run_simulate(study, sites[:n], work / f"run-{n}", timeout_s=args.timeout)
        except Exception as error:  # noqa: BLE001 - one size failing must not hide the others
            row.update(ok=False, error=str(error)[-2000:])
            runs.append(row)
            print(f"{n} sites: failed: {str(error)[-500:]}", file=sys.stderr)
            continue
        rounds = [r["wall_time_s"] for r in summary["rounds"]]
        actors = sorted(set(re.findall(r"ClientAppActor pid=(\d+)", stderr)))
        row.update(
            ok=True,
            wall_time_s=round(seconds, 2),
            server_app_s=round(summary["wall_time_s"], 2),
            startup_s=round(seconds - summary["wall_time_s"], 2),
            first_round_s=round(rounds[0], 2),
            later_round_s=round(statistics.median(rounds[1:]), 2) if len(rounds) > 1 else None,
            seconds_per_site_round=round(seconds / (n * args.rounds), 3),
            server_seconds_per_site_round=round(summary["wall_time_s"] / (n * args.rounds), 3),
            later_round_seconds_per_site=round(statistics.median(rounds[1:]) / n, 3) if len(rounds) > 1 else None,
            final_balanced_accuracy=summary.get("final_balanced_accuracy"),
            max_epsilon=max((s.get("epsilon") or 0.0) for s in summary["sites"].values()),
            sites_reporting=len(summary["sites"]),
            actors_seen_in_logs=len(actors) or None,
        )
        runs.append(row)
        print(f"{n} sites: {seconds:.1f} s ({row['seconds_per_site_round']:.3f} s per site-round)", file=sys.stderr)
    ok = [r for r in runs if r.get("ok")]
    ratio = (ok[-1]["seconds_per_site_round"] / ok[0]["seconds_per_site_round"]) if len(ok) > 1 else None
    return {
        "backbone": "biot-tiny",
        "participants_per_site": args.participants,
        "seconds_per_recording": args.duration,
        "rounds": args.rounds,
        "local_epochs": 1,
        "secure_aggregation": not args.plain,
        "simulation_resources": simulation_resources(),
        "synthesis_s": round(synth_s, 1),
        "runs": runs,
        "ratio_per_site_round_largest_over_smallest": ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default=None, help="comma-separated site counts (default 5,10,25,50; --quick 3,6)")
    parser.add_argument("--participants", type=int, default=24, help="synthetic participants per site")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of EEG per participant")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per study (default 2; --quick 1)")
    parser.add_argument("--plain", action="store_true", help="without secure aggregation (SecAgg+)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per simulated study")
    parser.add_argument("--quick", action="store_true", help="3 and 6 sites, 1 round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.sites = args.sites or ("3,6" if args.quick else "5,10,25,50")
    args.rounds = args.rounds or (1 if args.quick else 2)
    work = Path(tempfile.mkdtemp(prefix="fedneuro-sites-bench-"))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the result only
            result = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    res = result["simulation_resources"]
    print(f"BIOT-tiny, {args.participants} participants x {args.duration:g} s per site, {args.rounds} round(s), "
          f"{'SecAgg+' if result['secure_aggregation'] else 'plain'}; Ray: {res['ray_num_cpus']} CPUs, "
          f"{res['client_num_cpus']} per actor -> {res['concurrent_actors']} concurrent actors")
    print(f"{'sites':>6s} {'wall s':>8s} {'start s':>8s} {'round 1 s':>10s} {'later s':>8s} {'s/site-round':>13s} {'bal. acc.':>9s}")
    for r in result["runs"]:
        if not r.get("ok"):
            print(f"{r['sites']:>6d} failed: {r['error'][-300:]}")
            continue
        later = "-" if r["later_round_s"] is None else f"{r['later_round_s']:.1f}"
        print(f"{r['sites']:>6d} {r['wall_time_s']:>8.1f} {r['startup_s']:>8.1f} {r['first_round_s']:>10.1f} "
              f"{later:>8s} {r['seconds_per_site_round']:>13.3f} {r['final_balanced_accuracy'] or 0:>9.3f}")
    if result["ratio_per_site_round_largest_over_smallest"] is not None:
        print(f"seconds per site-round, most / fewest sites: {result['ratio_per_site_round_largest_over_smallest']:.2f}x")


if __name__ == "__main__":
    main()
