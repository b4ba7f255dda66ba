"""Wording shared by messages that name an argument or suggest a fix.

Messages name arguments the way the reader gives them: ``key=`` from Python,
``--key`` from the command line. The ``scgpcl`` command runs inside
:func:`cli_context`; :func:`arg` picks the name. Only the standard library is
imported here.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["arg", "array_input", "cli_context", "clip", "in_cli", "is_array_input", "empty_clusters_message",
           "k_estimates", "listing", "per_run_k", "still_working", "warn_user"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

_IN_CLI: contextvars.ContextVar[bool] = contextvars.ContextVar("scgpcl_in_cli", default=False)


@contextmanager
def _raised(flag: contextvars.ContextVar[bool]) -> Iterator[None]:
    """``flag`` is True while the body runs (and back to what it was after)."""
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def cli_context() -> contextlib.AbstractContextManager[None]:
    """Messages raised while the body runs name the command-line flags."""
    return _raised(_IN_CLI)


def in_cli() -> bool:
    return _IN_CLI.get()


_ARRAY_INPUT: contextvars.ContextVar[bool] = contextvars.ContextVar("scgpcl_array_input", default=False)


def array_input() -> contextlib.AbstractContextManager[None]:
    """Messages raised while the body runs speak of a matrix, not of an AnnData's layers and ``.raw``.

    The scikit-learn estimator wraps its array in an AnnData of its own; its user never made one.
    """
    return _raised(_ARRAY_INPUT)


def is_array_input() -> bool:
    return _ARRAY_INPUT.get()


def arg(python: str, cli: str) -> str:
    """``python`` (e.g. ``"key="``) from Python, ``cli`` (e.g. ``"--key"``) inside the ``scgpcl`` command."""
    return cli if in_cli() else python


def counted(n, noun: str) -> str:
    """``"1 round"``, ``"3 rounds"`` (anything that is not 1, e.g. ``"?"``, takes the plural)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with ``...`` where it was cut.

    Quoted messages from other libraries (torch, h5py) can run to pages; a cut in the middle of a word
    reads as a typo, so the cut falls at the last space before ``limit`` (mid-word only for one long word).
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    if limit <= 3:
        return "..."[:max(limit, 0)]
    head = text[: limit - 3]
    space = head.rfind(" ")
    if space > limit // 2:
        head = head[:space]
    return head.rstrip(" ,;:") + "..."


def k_estimates(estimates) -> str:
    """``"eigengap 8, leiden_stability 9, leiden_modularity 11"``: each criterion's K, as recorded."""
    return ", ".join(f"{name} {int(k)}" for name, k in dict(estimates or {}).items())


def per_run_k(ks) -> str:
    """``"K = 5, 6, 5"`` when the runs' K differ (K estimated per run), else ``""``."""
    ks = [] if ks is None else [int(k) for k in ks]  # an array after an .h5ad round trip: no `ks or []`
    return f"K = {', '.join(map(str, ks))}" if len(set(ks)) > 1 else ""


def kept_run(n_runs: int) -> str:
    """Why the run kept by ``n_runs`` > 1 was kept (two runs agree with each other equally: a tie)."""
    if n_runs == 2:
        return "the first of the two (two runs agree with each other equally, so neither is more typical)"
    return "the one that agrees best with the others"


def listing(names: Sequence[object], limit: int = 20) -> str:
    """``'a', 'b', 'c'`` (at most ``limit`` names, then how many more), or ``none``."""
    shown = ", ".join(repr(str(n)) for n in list(names)[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (shown + more) or "none"


def empty_clusters_message(n_used: int, k: int, *, finetuned: bool | None = None) -> str:
    """What happened when only ``n_used`` of the ``k`` clusters kept cells, and what to try.

    It does not blame the data: a run can leave clusters empty on data that do
    hold ``k`` groups (DEC fine-tuning merges small clusters; k-means can
    start badly).
    """
    n_empty = k - n_used
    stage = {True: "fine-tuning", False: "k-means on the pre-trained embedding", None: "k-means or fine-tuning"}[
        finetuned]
    tries = [f"another seed ({arg('random_state=', '--random-state')})"]
    if finetuned is not False:
        tries.append(f"k-means labels without fine-tuning ({arg('finetune=False', '--no-finetune')})")
    tries.append(f"a smaller K ({arg(f'n_clusters={n_used}', f'--n-clusters {n_used}')})")
    return (f"{n_empty} of the {k} clusters ended empty after {stage}, so the labels use {n_used} cluster numbers; "
            f"this is how the run went, not evidence that the data hold fewer than {k} groups. "
            f"Try {', '.join(tries[:-1])} or {tries[-1]}")


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside the package: the user's line.

    However deep inside scgpcl the warning is raised (``tl.cluster``, ``store_results``, ``predict``, the
    scikit-learn estimator), Python shows the line of the user's code that led to it. (Python 3.12's
    ``skip_file_prefixes`` does this; the package supports 3.10.) In a multi-process run only rank 0 warns:
    every process holds the same data, so the others would repeat it.
    """
    from ._launch import env_rank  # standard library only, like this module

    if env_rank() > 0:  # torchrun: every process has the same data; rank 0 warns
        return
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


#: each thread's phases being timed by :func:`still_working`, innermost last: only the innermost one speaks
_WORKING = threading.local()


@contextmanager
def still_working(what: str, *, every: float = 30.0) -> Iterator[None]:
    """Log ``"<what>: still working, N s so far"`` (INFO) every ``every`` seconds while the body runs.

    For the long phases that have no progress bar (a UMAP, the marker test, the cell-scaling choice, the
    simulator): a command that prints nothing for minutes looks hung. Nested phases: the innermost speaks.
    The line comes from a daemon thread, which only waits and logs.
    """
    log = logging.getLogger("scgpcl")
    done = threading.Event()
    start = time.perf_counter()
    if not hasattr(_WORKING, "stack"):
        _WORKING.stack = []
    stack, token = _WORKING.stack, object()  # this thread's phases (another thread's do not silence these)
    stack.append(token)

    def beat() -> None:
        while not done.wait(every):
            if stack and stack[-1] is token:
                log.info("%s: still working, %.0f s so far", what, time.perf_counter() - start)

    thread = threading.Thread(target=beat, name="scgpcl-still-working", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        stack.remove(token)
