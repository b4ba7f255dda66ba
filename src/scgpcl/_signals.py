"""SIGINT (Ctrl-C) and SIGTERM (e.g. a batch scheduler's time limit) in the ``scgpcl`` command.

:func:`handled`, installed by the command's ``main``, turns both signals into
exceptions (``KeyboardInterrupt``; :class:`Terminated` for SIGTERM), so that
the writers' ``except BaseException`` clean-up removes their temporary files
and the command ends with 130 or 143 and a message, never with a partial file.

A signal can arrive while Python runs a finaliser (``__del__``, a weakref
callback, as h5py's objects have); the exception raised there is reported as
"Exception ignored ..." and dropped, and the write would go on and succeed.
The handler therefore also records the signal, and the writers call
:func:`raise_if_interrupted` right before they move a finished file into
place.

Only the standard library is imported here.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Terminated", "handled", "raise_if_interrupted", "received", "deferred"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None
_installed = False
#: how many :func:`deferred` blocks are open, and the signal held back until the outermost ends
_deferring = 0
_held: int | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; handled like Ctrl-C (the command exits with 143 instead of 130)."""


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum, frame) -> None:
    global _received, _held
    if _received is None or signum == signal.SIGTERM:
        _received = signum
    if _deferring:  # inside deferred(): raised when the block ends
        if _held is None or signum == signal.SIGTERM:
            _held = signum
        return
    raise _exception(signum)


def received() -> int | None:
    """The signal received since :func:`handled` was entered (SIGTERM wins over SIGINT), or None."""
    return _received


def raise_if_interrupted() -> None:
    """Raise the interrupt now if a signal arrived and its exception was dropped on the way."""
    if _installed and _received is not None:
        raise _exception(_received)


@contextmanager
def handled() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into exceptions while the body runs (main thread only; else a no-op)."""
    global _received, _installed, _held
    if threading.current_thread() is not threading.main_thread() or _installed:
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    previous_hook = sys.unraisablehook

    def unraisable(info) -> None:
        # our own interrupt, dropped inside a finaliser: raise_if_interrupted raises it again
        if isinstance(info.exc_value, KeyboardInterrupt) and _received is not None:
            return
        previous_hook(info)

    _received, _installed = None, True
    sys.unraisablehook = unraisable
    for s in _SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        sys.unraisablehook = previous_hook
        _received, _installed = None, False
        _held = None


def _hold(signum, frame) -> None:
    """The handler :func:`deferred` installs outside :func:`handled`: record the signal, deliver it later."""
    global _held
    if _held is None or signum == signal.SIGTERM:
        _held = signum


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the body runs (a clean-up that must finish), then deliver them.

    Blocking them in this thread alone (``pthread_sigmask``) is not enough: the kernel gives a process's
    signal to any thread that does not block it (torch's, h5py's, a notebook kernel's), and Python then
    runs the handler in the main thread, in the body. So a handler holds them. Under :func:`handled` it is
    the command's own handler; in the Python API the outermost block installs one for its duration (where
    the signal has a Python handler that is not "ignore"), then puts the user's handler back and raises
    the held signal to it (``signal.raise_signal``): a Ctrl-C becomes ``KeyboardInterrupt`` at the end
    of the block, as if it had arrived there.
    """
    global _deferring, _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    own: dict[int, object] = {}
    if not _installed and _deferring == 0:
        _held = None  # nothing left over from an earlier block
        for s in _SIGNALS:
            h = signal.getsignal(s)
            if h is not None and h is not signal.SIG_IGN:  # None: set outside Python, cannot be put back
                own[s] = h
                signal.signal(s, _hold)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) if hasattr(signal, "pthread_sigmask") else None
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        for s, h in own.items():  # first: a signal that arrives meanwhile is still held, and read below
            signal.signal(s, h)
        held = None
        if _deferring == 0:
            held, _held = _held, None
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)  # a signal pending here goes to the handler now in place
        if held is not None:
            if own:  # the user's handler decides (default_int_handler raises KeyboardInterrupt)
                signal.raise_signal(held)
            else:
                raise _exception(held)
