"""Load on Flower's deployment engine: N SuperNodes on loopback, R rounds, the tiny model.

    python benchmarks/load.py [--sites 20] [--rounds 5] [--secure] [--json]

Real processes (`fedneuro server start`, N x `fedneuro site start`, `fedneuro run`) with TLS,
node authentication and the full governance of the operators' guides. Checks that every round
aggregated an update from every site (no lost update) and that the run ended within its time
limit (no hang), and samples the memory (RSS) of the coordinator's process tree (SuperLink,
SuperExec, ServerApp) every 2 s: reported per round, so growth over rounds shows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)] if p.is_running())
    except psutil.Error:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--secure", action="store_true", help="with SecAgg+ (the default study's setting)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from consortium_harness import cli, prepare_site, provision, sign_study, start_server, start_site, tiny_study

    from fedneuro.data.synth import synthesize_consortium
    from fedneuro.study import load_study

    with tempfile.TemporaryDirectory(prefix="fedneuro-load-") as tmp:
        root = Path(tmp)
        sites = dict(synthesize_consortium(root / "data", n_sites=args.sites, participants_per_site=12, duration_s=20.0, seed=5))
        kits, _ = provision(root, list(sites))
        study_path = tiny_study(root, rounds=args.rounds, replace={"round_timeout_s = 900": "round_timeout_s = 1800",
                                                                   "connect_timeout_s = 300": "connect_timeout_s = 900"})
        if not args.secure:
            study_path.write_text(study_path.read_text().replace("enabled = true", "enabled = false"))
        study = load_study(study_path)
        sign_study(study_path, kits)
        configs = {n: prepare_site(root, kits, n, r, study_path, study_seed=study.study.seed) for n, r in sites.items()}
        summary_path = root / "coordinator" / "studies" / study.study.id / "summary.json"
        processes = []
        samples: list[tuple[float, int, int]] = []  # (time, rounds recorded, coordinator RSS)
        stop = threading.Event()
        try:
            server = start_server(root, kits)
            processes.append(server)
            processes += [start_site(kits, n, c) for n, c in configs.items()]

            def sample() -> None:
                while not stop.is_set():
                    try:
                        done = len(json.loads(summary_path.read_text()).get("rounds", []))
                    except (OSError, ValueError):
                        done = 0
                    samples.append((time.monotonic(), done, _tree_rss(server.proc.pid)))
                    stop.wait(2.0)

            threading.Thread(target=sample, daemon=True).start()
            started = time.monotonic()
            run = cli(["run", str(study_path), "--kit", str(kits / "coordinator"), "--timeout", str(args.timeout), "--json"],
                      args.timeout + 60)
            wall = time.monotonic() - started
        finally:
            stop.set()
            for process in reversed(processes):
                process.stop()
        summary = json.loads(summary_path.read_text())
    per_round = {}
    for _, done, rss in samples:
        per_round[done] = max(per_round.get(done, 0), rss)
    lost = {r["round"]: sorted(set(sites) - {n for n, s in r["sites"].items() if s["num_examples"]}) for r in summary["rounds"]}
    result = {
        "sites": args.sites, "rounds": args.rounds, "secure_aggregation": args.secure,
        "status": json.loads(run.stdout)["status"] if run.stdout.strip().startswith("{") else f"exit {run.returncode}",
        "wall_time_s": wall, "rounds_recorded": len(summary["rounds"]),
        "sites_without_update_per_round": lost,
        "coordinator_rss_mb_by_rounds_done": {k: round(v / 2**20, 1) for k, v in sorted(per_round.items())},
        "coordinator_rss_mb_max": round(max((s[2] for s in samples), default=0) / 2**20, 1),
        "final_balanced_accuracy": summary.get("final_balanced_accuracy"),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.sites} SuperNodes, {args.rounds} rounds: {result['status']} in {wall:.0f} s; "
              f"sites without an update per round: {lost}; coordinator RSS by rounds done (MB): "
              f"{result['coordinator_rss_mb_by_rounds_done']} (max {result['coordinator_rss_mb_max']})")


if __name__ == "__main__":
    main()
