"""Device selection, autocast and host-to-device staging (CPU here; CUDA paths where present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedneuro.models.device import device_plan, predict_proba, select_device


def test_auto_picks_cuda_only_when_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device(" CPU ").type == "cpu"


def test_bad_or_absent_devices_are_refused_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"'device' parameter: 'gpu'\. Allowed values are 'auto', 'cpu'"):
        select_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device.*Use 'cpu' or 'auto'"):
            select_device("cuda")
        with pytest.raises(ValueError, match="'precision' parameter: 'bf16'"):
            device_plan("cpu", precision="bf16")


def test_cpu_plan_is_fp32_without_pinning_and_predicts_probabilities() -> None:
    plan = device_plan("cpu")
    assert plan.autocast_dtype is None and not plan.pin_memory and plan.description == "cpu (fp32)"
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    tensor = plan.to_device(X)
    assert tensor.device.type == "cpu" and np.shares_memory(tensor.numpy(), X)
    module = plan.prepare(torch.nn.Linear(3, 4))
    with plan.autocast():
        proba = predict_proba(module, X, plan=plan, batch_size=3)
    assert proba.shape == (10, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert predict_proba(module, X[:0], plan=plan).shape == (0, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_plan_pins_and_autocasts() -> None:  # pragma: no cover - CI has no GPU
    plan = device_plan("auto")
    assert plan.device.type == "cuda" and plan.pin_memory
    assert plan.autocast_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    X = np.ones((4, 3), dtype=np.float32)
    assert plan.to_device(X).device.type == "cuda"
    module = plan.prepare(torch.nn.Linear(3, 2))
    np.testing.assert_allclose(predict_proba(module, X, plan=plan).sum(axis=1), 1.0, rtol=1e-2)
