"""``scgpcl cluster --processes P``: the same command in P local processes forming one process group.

The launcher is what ``torchrun --standalone --nproc-per-node P`` does, cut
down to one machine and to the ``scgpcl`` command's needs: it picks a free
port, starts P copies of the command with ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set, and waits. Input
errors are the children's own (every process checks the same input; rank 0
alone prints the message), so the launcher adds no message of its own unless a
child disappeared without one. It

- forwards SIGINT (Ctrl-C) and SIGTERM to every child (each ends with the
  command's interrupt handling: no partial output), and kills those still
  running after :data:`GRACE_SECONDS`;
- stops the others when one child fails and they have not ended on their own
  within :data:`GRACE_SECONDS` (they normally end at once: their next
  collective fails);
- ends the children if the launcher itself is killed, so that no child
  trains on, orphaned: on Linux the kernel sends them SIGTERM; elsewhere
  each watches a pipe the launcher holds open (:func:`_watch_launcher`);
- gives each child ``cores // P`` threads (``OMP_NUM_THREADS``) of the cores
  it may use (:func:`usable_cores`) unless the environment sets it
  (torchrun gives each 1).

Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time

__all__ = ["CHILD_ENV", "add_options", "env_rank", "env_world_size", "launch_if_asked", "run_local"]

#: set in the children's environment (they must not launch again)
CHILD_ENV = "SCGPCL_LAUNCHED_BY"
#: set where a child's standard input is a pipe its launcher holds open (not on Linux): see _watch_launcher
PIPE_ENV = "SCGPCL_LAUNCHER_PIPE"
#: seconds the other processes get to end on their own after one failed, or after a forwarded signal
GRACE_SECONDS = 30.0
_POLL = 0.1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a batch job's allocation, ``taskset``), else all."""
    if hasattr(os, "sched_getaffinity"):
        with contextlib.suppress(OSError):
            return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def run_local(argv: list[str], processes: int, *, grace: float = GRACE_SECONDS) -> int:
    """Run ``python -m scgpcl *argv`` as ``processes`` ranks on this machine; returns the exit code.

    The exit code is rank 0's, or that of the first process that failed; 130 /
    143 when the launcher was interrupted (SIGINT / SIGTERM).
    """
    port = _free_port()
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(processes),
                LOCAL_WORLD_SIZE=str(processes), **{CHILD_ENV: str(os.getpid())})
    # P processes each with all the cores' threads would fight over them: share the cores unless told otherwise
    cores = usable_cores()
    base.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))
    if processes > cores:
        fix = "leave out --processes (one process)" if cores == 1 else f"pass --processes {cores} or fewer"
        logging.getLogger("scgpcl").warning(
            "--processes %d on %d usable core%s: the processes take turns on them, which is slower than fewer "
            "processes (%s)", processes, cores, "s" if cores != 1 else "", fix)
    if os.name == "nt":  # torch's Windows wheels (2.4 on) lack libuv, which the rendezvous asks for by default
        base.setdefault("USE_LIBUV", "0")
    children: list[subprocess.Popen] = []
    received: list[int] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        if os.name == "nt" and signum == signal.SIGINT:
            return  # on Windows the children share the console: its Ctrl-C reaches them too (and Popen cannot send it)
        for p in children:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, OSError, ValueError):
                    p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    late: set[int] = set()
    forced: set[int] = set()  # ranks the launcher killed itself
    try:
        for r in range(processes):
            if received:
                break
            env = dict(base, RANK=str(r), LOCAL_RANK=str(r), GROUP_RANK="0", ROLE_RANK=str(r))
            # a session of their own: a Ctrl-C in the terminal reaches the launcher, which forwards it once
            # Linux ends them with the launcher by a parent-death signal; elsewhere they watch a pipe the launcher
            # holds open, which the system closes when the launcher ends in any way (_watch_launcher)
            linux = sys.platform == "linux"
            children.append(subprocess.Popen([sys.executable, "-m", "scgpcl", *argv],
                                             env=env if linux else dict(env, **{PIPE_ENV: "1"}),
                                             stdin=subprocess.DEVNULL if linux else subprocess.PIPE,
                                             start_new_session=True, preexec_fn=_die_with_parent if linux else None))
        deadline, stopping = None, False
        while any(p.poll() is None for p in children):
            now = time.monotonic()
            alive = [r for r, p in enumerate(children) if p.returncode is None]
            if not stopping:
                if children[0].returncode not in (None, 0):
                    # rank 0 failed and has said why (every process checks the same input): stop the others now
                    stopping, deadline = _stop(children, alive), now + 10.0
                elif received or any(p.returncode not in (None, 0) for p in children):
                    deadline = deadline or now + grace
                    if now > deadline:  # the others did not end on their own (they normally do at once)
                        late.update(alive)
                        stopping, deadline = _stop(children, alive), now + 10.0
            elif now > deadline:  # they ignored SIGTERM for 10 s
                for r in alive:
                    children[r].kill()
                    forced.add(r)
                break
            time.sleep(_POLL)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        forced.update(_wait_or_kill(children, 10.0))
    return _report(children, received, late, forced)


def _stop(children: list[subprocess.Popen], ranks: list[int]) -> bool:
    for r in ranks:
        with contextlib.suppress(ProcessLookupError):
            children[r].send_signal(signal.SIGTERM)
    return True


def _wait_or_kill(children: list[subprocess.Popen], seconds: float) -> set[int]:
    """Wait for every process; kill those still running after ``seconds``. Returns the ranks killed."""
    end, killed = time.monotonic() + seconds, set()
    for r, p in enumerate(children):
        try:
            p.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            killed.add(r)
    return killed


def _report(children: list[subprocess.Popen], received: list[int], late: set[int],
            forced: set[int] = frozenset()) -> int:
    """Say how the processes ended and return the launcher's exit code.

    ``forced``: ranks the launcher itself killed (SIGKILL) because they did not stop when asked; their SIGKILL
    is not blamed on memory.
    """
    n = len(children)
    codes = [p.returncode for p in children]
    if received:
        signum = signal.SIGTERM if signal.SIGTERM in received else signal.SIGINT
        if codes[0] not in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
            print(f"scgpcl: {what}; the {n} processes were stopped", file=sys.stderr)
        return 128 + signum
    if all(c == 0 for c in codes):
        return 0
    for r, c in enumerate(codes):
        if r in forced and r not in late:
            print(f"scgpcl: error: process {r} of {n} did not stop within 10 s of being asked to and was killed "
                  "(SIGKILL); the run stopped and wrote no output", file=sys.stderr)
        elif c < 0 and c != -signal.SIGTERM and r not in forced:
            print(f"scgpcl: error: process {r} of {n} was killed by {_signal_name(c)} (out of memory?); "
                  "the run stopped and wrote no output", file=sys.stderr)
    if late:
        print(f"scgpcl: error: process(es) {', '.join(map(str, sorted(late)))} of {n} did not end within "
              f"{GRACE_SECONDS:g} s after another one failed, and were stopped", file=sys.stderr)
    code = codes[0] if codes[0] != 0 else next(c for c in codes if c != 0)
    return code if code > 0 else 128 - code  # killed by a signal: 128 + its number, as a shell reports it


# ------------------------------------------------------------------ the command's side
def env_rank() -> int:
    """The rank of this process from the launcher's environment (0 outside a multi-process run), without torch."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the launcher's environment (1 outside a multi-process run), without torch."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def add_options(p) -> None:
    """The distributed options of ``scgpcl cluster`` (docs/distributed.md)."""
    g = p.add_argument_group("data-parallel training (docs/distributed.md; under torchrun, the group torchrun "
                             "starts is used)")
    g.add_argument("--processes", type=_processes, default=1, metavar="P",
                   help="train with P processes on this machine (gloo on the CPU; each takes cores / P threads, "
                        "at least 1, unless OMP_NUM_THREADS says otherwise); 1: one process (default: 1)")
    g.add_argument("--dist-backend", choices=["auto", "gloo", "nccl"], default="auto",
                   help="torch.distributed backend: auto is nccl on CUDA, gloo on the CPU (default: auto)")
    g.add_argument("--dist-timeout", type=_minutes, default=15.0, metavar="MINUTES",
                   help="how long a process waits for the others before the run ends with an error (default: 15)")
    g.add_argument("--sync-batchnorm", action=argparse.BooleanOptionalAction, default=True,
                   help="BatchNorm statistics over the whole global minibatch (as one process would compute "
                        "them) rather than over each process's part (default: on)")


def _processes(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes >= 1, got {value!r}")
    return n


def _minutes(value: str) -> float:
    try:
        m = float(value)
    except ValueError:
        m = -1.0
    if not m > 0:
        raise argparse.ArgumentTypeError(f"expected a number of minutes > 0, got {value!r}")
    return m


def _watch_launcher() -> None:
    """In a child on macOS or Windows: end this process (as by SIGTERM, so it cleans up) once its launcher is gone.

    Linux children ask the kernel for that (``_die_with_parent``); elsewhere a killed launcher (``kill -9``, a
    closed terminal) left them training with nobody to collect their work. The launcher holds the write end of
    the child's standard input open and never writes: end of file means it is gone, however it ended. (The
    parent's process id does not tell: Windows keeps reporting a parent that has exited, and a venv's
    ``python.exe`` is a launcher of its own between the two.)
    """
    import threading

    # a duplicate of the descriptor, read with os.read: a thread blocked in sys.stdin's reader holds its lock,
    # and the interpreter's shutdown then aborts (SIGABRT) when the child ends normally
    try:
        fd = os.dup(sys.stdin.fileno())
    except (OSError, ValueError, AttributeError):  # no standard input to watch
        return

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 4096):
                pass
        if os.name == "nt":  # os.kill would be TerminateProcess: the SIGTERM handler (clean-up) in the main thread
            import _thread

            _thread.interrupt_main(signal.SIGTERM)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="scgpcl-launcher-watch", daemon=True).start()


def launch_if_asked(args) -> int | None:
    """Run the command in P processes when ``--processes P > 1`` asks for it in the launching process.

    Returns its exit code; otherwise None (this process does the work itself).
    """
    from ._errors import InputError

    p = getattr(args, "processes", 1)
    if os.environ.get(CHILD_ENV):
        if os.environ.get(PIPE_ENV) and sys.stdin is not None:
            _watch_launcher()
        return None
    if p > 1 and env_world_size() > 1:
        raise InputError(f"--processes {p} starts its own processes, but this one already is one of "
                         f"{env_world_size()} (torchrun): leave --processes out under torchrun")
    if p <= 1:
        return None
    return run_local(list(args.argv), p)
