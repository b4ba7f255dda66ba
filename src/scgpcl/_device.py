"""Device choice: CUDA when present, CPU otherwise, always overridable."""

from __future__ import annotations

import torch

from ._errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks ``cuda`` when available, else ``cpu``; anything else is checked."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return dev
