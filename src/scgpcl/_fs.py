"""Small file-system checks shared by the writers (CLI outputs, reports, simulated data)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager, suppress
from glob import escape as glob_escape
from pathlib import Path

from ._errors import InputError
from ._messages import counted
from ._signals import deferred

#: what marks a folder as a zarr store (v2 group metadata, v3 metadata)
ZARR_MARKERS = (".zgroup", "zarr.json")


def is_zarr_store(path: str | os.PathLike) -> bool:
    """A folder holding zarr's metadata, or named ``*.zarr`` with no ``matrix.mtx`` (which makes a 10x folder)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if any((path / m).is_file() for m in ZARR_MARKERS):
        return True
    return path.suffix.lower() == ".zarr" and not any(path.glob("*matrix.mtx*"))


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replacement_mode(path: str | os.PathLike, default: int) -> int:
    """Permission bits for what is about to replace ``path``: those of what is there, else ``default`` under the umask.

    ``--overwrite`` replaced a ``chmod 600`` file with one everybody can read.
    """
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o777  # not setuid, setgid or sticky
    except OSError:
        return default & ~current_umask()


#: name prefix of the empty file :func:`check_writable` creates and removes (other checks ignore such files)
PROBE_PREFIX = ".scgpcl-write-test-"


def output_target(out: Path) -> Path:
    """The file an output path replaces: the path itself, or the end of the link (chain) it is.

    Refuses, with the fix, a link that loops and a link into a folder that does not exist (the write would
    fail there, as a permission problem). The folder is named relative to the working directory.
    """
    if not out.is_symlink():
        return out
    try:
        target = out.resolve()
    except (RuntimeError, OSError):  # a loop: RuntimeError up to Python 3.12, OSError (ELOOP) from 3.13
        raise InputError(f"output '{out}' is a link that leads back to itself (a loop); remove it, or give "
                         "another output") from None
    if not target.parent.is_dir():
        raise InputError(f"output '{out}' is a link to '{os.path.relpath(target)}', whose folder does not exist; "
                         "create that folder first, or give another output")
    return target


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Refuse a folder we cannot create files in now, before any work whose result would be lost.

    The permission bits are not enough: root passes ``os.access`` everywhere, and a read-only or
    special file system (``/sys``) may still refuse. So a hidden empty file is created in the folder
    and removed at once, with Ctrl-C and SIGTERM held back meanwhile so that it is never left behind.
    It cannot tell whether the disk has room for the output.
    """
    if Path(folder).exists() and not Path(folder).is_dir():
        problem = "it is a file, not a folder"
    else:
        problem = None if os.access(Path(folder), os.W_OK | os.X_OK) else "no write permission"
    if problem is None:
        with deferred():
            try:
                fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
                os.close(fd)
                os.unlink(probe)
            except OSError as e:
                problem = f"creating a file there failed: {e.strerror or type(e).__name__}"
    if problem is not None:
        raise InputError(f"cannot write {what} into '{folder}' ({problem}); choose a folder you can write to")


def is_probe(path: Path) -> bool:
    """A file :func:`check_writable` is creating (perhaps another process's, at this moment)."""
    return path.name.startswith(PROBE_PREFIX)


def byte_size(n: float) -> str:
    """``n`` bytes for a reader: "512 bytes", "2.0 MB", "1.3 GB" (GB above that too)."""
    if n < 1000:
        return f"{n:.0f} bytes"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def warn_leftovers(out: Path, *, folders: bool = False) -> None:
    """Name the temporary files a killed run (``kill -9``, a power cut) left beside ``out``: nothing else can.

    They are not removed: another run may be writing one of them right now. ``folders``: ``out`` is a report
    folder, whose temporary copies (``.NAME.*.tmp``, and ``.NAME.old-*`` during its replacement) are folders.
    """
    with suppress(OSError):
        name = glob_escape(out.name)
        patterns = [f".{name}.*.tmp"] + ([f".{name}.old-*"] if folders else [])
        left = sorted({p for pattern in patterns for p in out.parent.glob(pattern)
                       if (p.is_dir() if folders else p.is_file())})
        if left:
            def size_of(p: Path) -> int:
                return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size

            size = byte_size(sum(size_of(p) for p in left))
            what = "temporary folder" if folders else "temporary file"
            logging.getLogger("scgpcl").warning(
                "%s beside '%s' (%s, %s in all) left by a run that was killed while writing; unless another run is "
                "writing '%s' now, remove %s", counted(len(left), what), out,
                ", ".join(p.name for p in left[:3]) + (", ..." if len(left) > 3 else ""), size, out.name,
                "it" if len(left) == 1 else "them")


def space_problem(folder: str | os.PathLike, need: int, *, total: int | None = None) -> str | None:
    """Why a file of about ``need`` bytes cannot be written in ``folder``, or None if it fits; with the fix.

    Checks the process's file-size limit (``ulimit -f``) against the file and the free space of the
    folder's file system against ``total`` (everything about to be written there; default ``need``). A full
    disk must be caught before the write: h5py ends the whole process (a segmentation fault) when it runs
    out of space part-way through an .h5ad.
    """
    try:
        import resource  # POSIX only

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and need > limit:
            return (f"needs about {byte_size(need)} but the file-size limit (ulimit -f) is {byte_size(limit)}; "
                    "raise the limit")
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        pass
    try:
        free = shutil.disk_usage(Path(folder)).free
    except OSError:  # the folder went away: the write itself says so
        return None
    total = need if total is None else total
    if total > free:
        return (f"needs about {byte_size(total)} and the disk of '{folder}' has {byte_size(free)} free; free some "
                "space or write elsewhere")
    return None


#: the errors of .h5ad writes that failed part-way, kept alive. h5py cannot close the HDF5 objects of a write
#: that failed (a full disk, ``ulimit -f``) and ends the process with a segmentation fault when they are freed
#: (h5py issue 914): the command keeps them and leaves with ``os._exit`` (:func:`exit_past_unclosable_hdf5`)
_UNCLOSABLE: list[BaseException] = []


def keep_unclosable(err: BaseException) -> None:
    """Keep ``err`` (and the HDF5 objects its traceback holds) alive until the process ends."""
    _UNCLOSABLE.append(err)


@contextmanager
def quiet_hdf5_deallocs():
    """Route the tracebacks h5py prints for a failed write's objects (in ``ObjectID.__dealloc__``) to the debug log.

    Python (``sys.excepthook``, through Cython) and ``sys.unraisablehook`` print them as the failed write
    unwinds; the write's own error says what happened. Other exceptions go to the hooks in place.
    """
    log = logging.getLogger("scgpcl")
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def from_h5py_dealloc(exc_type, tb) -> bool:
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = tb.tb_frame.f_code.co_filename if tb is not None else ""
        return issubclass(exc_type, (OSError, RuntimeError)) and "h5py" in where and "_objects" in where

    def unraisable_hook(unraisable):
        if "h5py" in repr(getattr(unraisable, "object", "")) and isinstance(unraisable.exc_value, (OSError, RuntimeError)):
            log.debug("h5py could not free an object of a failed write: %s", unraisable.exc_value)
            return
        previous_unraisable(unraisable)

    def except_hook(exc_type, value, tb):
        if from_h5py_dealloc(exc_type, tb):
            log.debug("h5py could not free an object of a failed write: %s", value)
            return
        previous_except(exc_type, value, tb)

    sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous_unraisable, previous_except


def unclosable_hdf5_left() -> bool:
    """Whether a failed write left HDF5 objects that must never be freed (:func:`keep_unclosable`)."""
    return bool(_UNCLOSABLE)


def exit_past_unclosable_hdf5(code: int) -> int:
    """``code``, or end the process with it at once when a failed write left HDF5 objects that cannot be freed.

    Only for the ``scgpcl`` command itself: the interpreter's shutdown would free them and crash (exit 139
    or 134 after the command's own message).
    """
    if _UNCLOSABLE:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
