"""DP-SGD step time / non-private step time on the same LoRA model (CPU), side by side.

    python benchmarks/dp_step.py [--preset labram-base] [--participants 8] [--windows 4] [--repeats 5] [--json]

Each repeat times one non-private step, one participant-level DP step and one window-level
DP step on the same batch, interleaved so machine noise hits all three alike; the ratio of
medians is reported. Goal (issue 5): participant-level DP ≤ 1.15× on LaBraM-base LoRA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

from fedneuro.models.adapters import build_model
from fedneuro.models.registry import get_backbone_preset
from fedneuro.models.spec import ModelSpec
from fedneuro.privacy.engine import UnitDPOptimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="labram-base")
    parser.add_argument("--participants", type=int, default=8, help="participants per step")
    parser.add_argument("--windows", type=int, default=4, help="windows per participant")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", default="ew", choices=["hooks", "functorch", "ew"],
                        help="Opacus per-sample gradient mode of the DP engine")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    contract = get_backbone_preset(args.preset).contract
    n = args.participants * args.windows
    X = torch.randn(n, contract.n_chans, contract.n_times)
    y = torch.randint(0, 2, (n,))
    groups = torch.arange(args.participants).repeat_interleave(args.windows)

    plain = build_model(ModelSpec(backbone=args.preset), n_outputs=2, seed=0).module
    plain_opt = torch.optim.SGD([p for p in plain.parameters() if p.requires_grad], lr=0.01)

    def plain_step() -> None:
        plain_opt.zero_grad()
        torch.nn.functional.cross_entropy(plain(X), y).backward()
        plain_opt.step()

    engines = {}
    for unit, unit_groups, n_units in (("participant", groups, args.participants), ("window", torch.arange(n), n)):
        model = build_model(ModelSpec(backbone=args.preset), n_outputs=2, seed=0).module
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
        engine = UnitDPOptimizer(model, optimizer, noise_multiplier=1.0, max_grad_norm=1.0,
                                 expected_units_per_step=n_units, noise_seed=0, grad_sample_mode=args.mode)
        engines[unit] = (engine, unit_groups, n_units)
    plain.train()

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"non_private": [], "dp_participant": [], "dp_window": []}
    for repeat in range(args.repeats + 1):  # the first round warms up and is dropped
        sample = {
            "non_private": timed(plain_step),
            "dp_participant": timed(lambda: engines["participant"][0].step(X, y, engines["participant"][1], engines["participant"][2])),
            "dp_window": timed(lambda: engines["window"][0].step(X, y, engines["window"][1], engines["window"][2])),
        }
        if repeat:
            for key, value in sample.items():
                times[key].append(value)
    medians = {k: statistics.median(v) for k, v in times.items()}
    trainable = sum(p.numel() for p in plain.parameters() if p.requires_grad)
    result = {
        "preset": args.preset,
        "grad_sample_mode": args.mode,
        "parameters": sum(p.numel() for p in plain.parameters()),
        "trainable_parameters": trainable,
        "batch": {"participants": args.participants, "windows_per_participant": args.windows},
        "median_step_s": medians,
        "ratio_dp_participant_over_non_private": medians["dp_participant"] / medians["non_private"],
        "ratio_dp_window_over_non_private": medians["dp_window"] / medians["non_private"],
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.preset}: {result['parameters']:,} parameters, {trainable:,} trainable (LoRA + head); "
              f"batch {args.participants} participants x {args.windows} windows")
        for key, value in medians.items():
            print(f"  {key:15s} median {value * 1000:8.1f} ms")
        print(f"  DP (participant) / non-private = {result['ratio_dp_participant_over_non_private']:.3f}x")
        print(f"  DP (window)      / non-private = {result['ratio_dp_window_over_non_private']:.3f}x")


if __name__ == "__main__":
    main()
