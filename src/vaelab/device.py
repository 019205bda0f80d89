"""Where vaelab computes and in what precision: the device a config names, the dtype of network products."""

from __future__ import annotations

import torch

from .config import ConfigError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """The torch device `name` (auto: CUDA if torch sees one); a ConfigError naming `key` when unusable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}: {name!r} is not a device torch knows (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name!r} asked for, but torch sees no CUDA device; use cpu") from None
    if device.type not in ("cpu", "cuda") and not _available(device):
        raise ConfigError(f"{key}: {name!r} asked for, but this torch build cannot use it; use cpu") from None
    return device


def _available(device: torch.device) -> bool:
    """Whether a device of another kind than cpu/cuda (mps, xpu, ...) can hold a tensor here."""
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError):
        return False
    return True


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 in hardware (AVX-512 BF16 or AMX on x86 CPUs)."""
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with care
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def network_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype of the network products in training steps; None is float32.

    "auto" picks bfloat16 on CPUs that multiply it natively: there the products, which are
    most of a step, run much faster (benchmarks/train_speed.py), while the likelihood, KL and
    optimizer stay in float32 (see `VAE.mixed_precision`). Elsewhere float32: a GPU trains
    these small networks at a speed set by kernel launches, not by arithmetic.
    """
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else None
    return {"float32": None, "bfloat16": torch.bfloat16}[precision]
