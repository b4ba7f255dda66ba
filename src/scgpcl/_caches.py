"""Where numba and matplotlib keep their caches, when the usual folders cannot be written.

scanpy's and pynndescent's numba functions are compiled with ``cache=True``, and numba raises
``RuntimeError: cannot cache function ...: no locator available`` when neither the package's folder nor the
user's cache folder can be written: a read-only or missing home with a shared (read-only) installation, as
in Apptainer images, conda modules on a cluster or a service account. scgpcl failed before training there on
any input with more than 2000 genes. matplotlib copes with a warning and rebuilds its font cache each time.

:func:`use_writable_caches` runs when scgpcl is imported, before either library is: where the usual folder
cannot be written and the variable is not set, ``NUMBA_CACHE_DIR`` and ``MPLCONFIGDIR`` point into a folder
of the user's own under the temporary folder (kept, so later runs reuse the compiled code). Only the
standard library is imported here.
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile

__all__ = ["use_writable_caches"]


def _writable(path: str) -> bool:
    """Whether ``path`` can be written, or created under its nearest existing folder (nothing is created)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    return os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)


def _own_folder() -> str | None:
    """A folder of this user's under the temporary folder (made if absent), or None."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name (a container's uid without a passwd entry)
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    folder = os.path.join(tempfile.gettempdir(), f"scgpcl-caches-{user}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if hasattr(os, "getuid") and os.stat(folder).st_uid != os.getuid():  # someone else's: not ours to use
            return tempfile.mkdtemp(prefix="scgpcl-caches-")
        return folder
    except OSError:
        return None


def _usual_folders() -> tuple[str, str]:
    """Where numba (its user-wide cache) and matplotlib (its configuration and cache) write by default."""
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Caches", "numba"), os.path.join(home, ".matplotlib")
    if os.name == "nt":
        local = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return os.path.join(local, "numba"), os.path.join(home, ".matplotlib")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(cache, "numba"), os.path.join(config, "matplotlib")


def use_writable_caches() -> None:
    """Point numba's and matplotlib's caches at a folder of the user's own when theirs cannot be written."""
    numba, matplotlib = _usual_folders()
    wanted = {}
    if "NUMBA_CACHE_DIR" not in os.environ and not _writable(numba):
        wanted["NUMBA_CACHE_DIR"] = "numba"
    if "MPLCONFIGDIR" not in os.environ and not _writable(matplotlib):
        wanted["MPLCONFIGDIR"] = "matplotlib"
    if not wanted:
        return
    folder = _own_folder()
    if folder is not None:
        for variable, name in wanted.items():
            os.environ[variable] = os.path.join(folder, name)
