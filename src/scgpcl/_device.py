"""Device choice: CUDA when present, CPU otherwise, always overridable."""

from __future__ import annotations

import torch

from ._errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks ``cuda`` when available, else ``cpu``; anything else is checked."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(dev)!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise InputError(f"device {str(dev)!r} requested but this machine has {n} CUDA device(s): "
                             f"use 'cuda:0'{' to ' + repr(f'cuda:{n - 1}') if n > 1 else ''} or 'auto'")
    elif dev.type == "mps":  # Apple GPUs: named, so that a Mac user knows 'auto' did not overlook theirs
        raise InputError(f"device {str(dev)!r} (an Apple GPU) is not supported: scgpcl runs on CPUs and CUDA GPUs "
                         "only (its sparse graph products are not written for MPS); use 'cpu', which 'auto' picks "
                         "on a Mac")
    elif dev.type != "cpu":
        raise InputError(f"device {str(dev)!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev
