"""Adapter size vs backbone size, and backbone forward throughput, for every preset.

    python benchmarks/models.py [--quick] [--presets biot-base,cbramod-base] [--batch 16]
                                [--repeats 3] [--device auto] [--peak-tflops 989] [--json]

Per preset, in one run: bytes exchanged per round (LoRA r=8 + head, fp32) vs the fp32
backbone and their ratio (goal <= 5% for published sizes), windows/s (EEG) or volumes/s
(MRI) of the backbone's forward pass on CPU (fp32, no grad), and FLOPs per sample counted
by torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions; FFTs are not
counted). When CUDA is available, also the forward throughput on the GPU under bf16
autocast and the model FLOP utilisation: achieved FLOP/s / peak bf16 FLOP/s (``--peak-tflops``,
defaults to a table of known GPUs). ``--quick`` measures the small presets only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Any

import torch

from fedneuro.models.adapters import build_model, model_footprint
from fedneuro.models.device import device_plan
from fedneuro.models.registry import BackbonePreset, get_backbone_preset, list_backbone_presets
from fedneuro.models.spec import ModelSpec

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L4": 121.0}


def _peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key.replace(" ", "").lower() in name.replace(" ", "").lower():
            return value
    return None


def _flops_per_sample(module: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return counter.get_total_flops() / len(x)


def _throughput(module: torch.nn.Module, x: torch.Tensor, repeats: int, *, plan: Any) -> float:
    """Samples/s of the forward pass (median of ``repeats`` after one warm-up)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            sync()
            start = time.perf_counter()
            with plan.autocast():
                module(x)
            sync()
            if i:
                times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def measure(preset: BackbonePreset, *, batch: int, repeats: int, device: str, peak_tflops: float | None) -> dict[str, Any]:
    footprint = model_footprint(build_model(ModelSpec(backbone=preset.name), n_outputs=2, seed=0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = preset.build(preset, 2).eval()
        x = torch.randn(batch, *preset.input_shape)
    cpu = device_plan("cpu")
    row: dict[str, Any] = {
        "preset": preset.name,
        "modality": preset.modality,
        "unit": "volumes" if preset.modality == "mri" else "windows",
        "input_shape": list(preset.input_shape),
        "backbone_parameters": footprint.backbone_parameters,
        "trainable_parameters": footprint.trainable_parameters,
        "adapter_bytes": footprint.adapter_bytes,
        "backbone_bytes_fp32": footprint.backbone_bytes,
        "adapter_backbone_ratio": footprint.ratio,
        "ratio_goal_met": footprint.ratio <= 0.05,
        "gflops_per_sample": _flops_per_sample(backbone, x[:1]) / 1e9,
        "batch": batch,
        "cpu_samples_per_s": _throughput(backbone, x, repeats, plan=cpu),
    }
    plan = device_plan(device)
    if plan.device.type == "cuda":
        gpu_model = plan.prepare(backbone)
        gx = plan.to_device(x)
        rate = _throughput(gpu_model, gx, repeats, plan=plan)
        achieved = rate * row["gflops_per_sample"] * 1e9
        row.update({
            "gpu": torch.cuda.get_device_name(plan.device),
            "gpu_precision": "bf16 autocast" if plan.autocast_dtype is not None else "fp32",
            "gpu_samples_per_s": rate,
            "gpu_achieved_tflops": achieved / 1e12,
            "peak_bf16_tflops": peak_tflops,
            "mfu": achieved / (peak_tflops * 1e12) if peak_tflops else None,
        })
        backbone.cpu()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=None, help="comma-separated preset names (default: all)")
    parser.add_argument("--quick", action="store_true", help="small presets only (not *-base), 2 repeats")
    parser.add_argument("--batch", type=int, default=None, help="samples per forward (default 16 EEG / 4 MRI)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="GPU measurements run when this resolves to CUDA")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the GPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.presets:
        presets = [get_backbone_preset(name.strip()) for name in args.presets.split(",")]
    else:
        presets = [p for p in list_backbone_presets() if not (args.quick and p.name.endswith("-base"))]
    repeats = 2 if args.quick else args.repeats
    peak = args.peak_tflops
    if peak is None and torch.cuda.is_available():
        peak = _peak_tflops(torch.cuda.get_device_name())
    rows = [
        measure(p, batch=args.batch or (4 if p.modality == "mri" else 16), repeats=repeats,
                device=args.device, peak_tflops=peak)
        for p in presets
    ]
    result = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "cuda": torch.cuda.is_available(), "presets": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    gpu = any("gpu_samples_per_s" in r for r in rows)
    header = f"{'preset':16s} {'params':>11s} {'adapter':>10s} {'backbone':>11s} {'ratio':>7s} {'goal':>4s} " \
             f"{'GF/sample':>9s} {'CPU /s':>9s}" + (f" {'GPU /s':>9s} {'TFLOP/s':>8s} {'MFU':>6s}" if gpu else "")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; adapter = LoRA r=8 + head (fp32)")
    print(header)
    for r in rows:
        line = (f"{r['preset']:16s} {r['backbone_parameters']:>11,d} {r['adapter_bytes']:>10,d} "
                f"{r['backbone_bytes_fp32']:>11,d} {100 * r['adapter_backbone_ratio']:>6.2f}% "
                f"{'ok' if r['ratio_goal_met'] else 'no':>4s} {r['gflops_per_sample']:>9.3f} "
                f"{r['cpu_samples_per_s']:>9.1f}")
        if gpu:
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
            line += f" {r['gpu_samples_per_s']:>9.1f} {r['gpu_achieved_tflops']:>8.2f} {mfu:>6s}"
        print(line)
    print("CPU/GPU /s: samples (EEG windows or MRI volumes) per second, backbone forward, no grad")


if __name__ == "__main__":
    main()
