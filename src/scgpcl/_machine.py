"""What a run ran on and what it read: CPU and GPU model, file checksums. Standard library only.

The same seed gives different labels on different CPU models (floating-point
order in BLAS/OpenMP kernels; ``benchmarks/results/machine.md``) and under other
library versions, so a run's record names the CPU and the versions, and the input
file's SHA-256 says which data it saw.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

from ._fs import is_zarr_store

__all__ = ["cpu_model", "gpu_model", "sha256_of", "software_versions", "source_commit"]

#: the packages whose versions a run records (the same seed gives other numbers under other versions)
VERSIONED = ("scgpcl", "torch", "numpy", "scipy", "pandas", "anndata", "scanpy", "scikit-learn", "matplotlib",
             "umap-learn")


def software_versions() -> dict[str, str]:
    """Python's version and each installed package of :data:`VERSIONED` (from the installed metadata)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "scgpcl":  # run from a source tree without installing it
                from . import __version__

                out[name] = f"{__version__} (not installed)"
    if (commit := source_commit()) is not None:  # a development checkout: "0.1.0" names no one version of it
        out["scgpcl"] = f"{out.get('scgpcl', '?')} (git {commit})"
    return out


def source_commit() -> str | None:
    """The git commit of the checkout this package is imported from, if it is one.

    ``+dirty`` marks uncommitted changes to ``src/``. None when the package is not imported from a git checkout
    (an installed wheel) or git is missing. The checkout is the folder two levels above the package
    (``<root>/src/scgpcl``): a copy vendored into another project's ``src/`` records that project's commit.
    """
    root = Path(__file__).resolve().parents[2]  # src/scgpcl/_machine.py -> the repository
    if not (root / ".git").exists() or not (root / "src" / "scgpcl").is_dir():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        # --no-optional-locks: a run must not refresh the checkout's index (nor race another process for its lock)
        status = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain", "--", "src"],
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0 or not head.stdout.strip():
        return None
    return head.stdout.strip() + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_model(device) -> str | None:
    """The CUDA device's name for a CUDA ``device``, else None (torch is imported only then)."""
    if getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return None
    import torch

    return str(torch.cuda.get_device_name(device))


def sha256_of(path: str | os.PathLike, *, block: int = 1 << 20) -> str | dict[str, str]:
    r"""SHA-256 of a file; of each file in a folder (a 10x matrix folder) by name; one for a zarr store.

    A zarr store (:func:`~scgpcl._fs.is_zarr_store`) has hundreds of chunk files
    and its metadata in hidden ``.zattrs``-style files: its one digest is the SHA-256 of the lines
    ``<relative path>\0<file's SHA-256>\n`` of every file, symbolic links followed, sorted by path, so any
    changed, added or removed file changes it.
    """
    path = Path(path)
    if path.is_dir():
        if is_zarr_store(path):
            files = sorted((Path(root, name).relative_to(path).as_posix(), Path(root, name))
                           for root, _, names in os.walk(path, followlinks=True) for name in names)
            tree = hashlib.sha256()
            for rel, p in files:
                tree.update(f"{rel}\0{sha256_of(p, block=block)}\n".encode())
            return tree.hexdigest()
        return {p.name: sha256_of(p) for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
