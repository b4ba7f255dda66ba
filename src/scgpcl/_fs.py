"""Small file-system checks shared by the writers (CLI outputs, reports, simulated data)."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import InputError


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Refuse a folder we cannot create files in now, before any work whose result would be lost."""
    if not os.access(Path(folder), os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} into '{folder}' (no write permission); choose a folder you can write to")
