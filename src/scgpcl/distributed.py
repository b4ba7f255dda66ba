"""Data-parallel training on ``torch.distributed`` (docs/distributed.md).

scgpcl trains data-parallel whenever it runs in a process group of more than
one process: started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), by ``scgpcl cluster
--processes P``, or inside a group the caller initialised. Nothing changes in
the calls: every process runs the same script, ``SCGPCL(adata, K).train()``
joins the group, and every process gets the same results back.

This module holds what the rest of the package needs to know about the group:
who this process is (:func:`rank`, :func:`world_size`, :func:`is_main_process`,
all readable before the group exists, from the launcher's environment), how to
join it (:func:`init`) and leave it (:func:`shutdown`), and a
:class:`Communicator` whose collectives fail with a :class:`DistributedError`
that says what happened instead of a backend message or a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ._errors import is_allocation_failure
from ._messages import clip

__all__ = [
    "Communicator", "DistributedError", "check_process_devices", "init", "current", "is_distributed", "is_main_process",
    "local_rank", "rank", "rank_device", "shutdown", "world_size",
]

log = logging.getLogger("scgpcl")

#: Minutes a collective may wait for the other processes before the run ends with an error.
DEFAULT_TIMEOUT_MINUTES = 15.0
_BACKENDS = ("auto", "gloo", "nccl")
NCCL_WITHOUT_CUDA = ("--dist-backend nccl needs CUDA GPUs (nccl is NVIDIA's library), and torch sees none here; use "
                     "--dist-backend gloo, or auto (nccl on CUDA, gloo on the CPU)")


class DistributedError(RuntimeError):
    """A collective failed: another process ended (an error, a signal, out of memory) or hung past the timeout."""


class JoinFailed(DistributedError):
    """Joining the process group failed here (a wrong address or port, a peer that never came).

    Unlike a failed collective, each process fails to join on its own, so each one says so.
    """


# ------------------------------------------------------------------ who am I
def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return default


def world_size() -> int:
    """Processes in the run: the initialised group's size, else ``WORLD_SIZE`` (torchrun), else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """The rank of this process: from the initialised group, else ``RANK`` (torchrun), else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    """The rank of this process on its machine (``LOCAL_RANK``; picks its GPU)."""
    return _env_int("LOCAL_RANK", rank())


def is_distributed() -> bool:
    """True when training will be data-parallel (more than one process)."""
    return world_size() > 1


def is_main_process() -> bool:
    """True on rank 0, the process that logs, reads labels for metrics and writes the outputs."""
    return rank() == 0


def check_process_devices(device: torch.device, backend: str = "auto") -> None:
    """Refuse, before any work, a multi-process run whose processes could not each have their own GPU under nccl.

    ``device`` is the device asked for (before :func:`rank_device`); ``backend`` the one asked for (``auto``:
    the group's if one is initialised, else nccl on CUDA). nccl refuses two processes on one GPU and tensors
    on the CPU, but only at the first collective, after the data is read and prepared, and then every process
    blames another. One process, or gloo, is never refused here. When ``CUDA_VISIBLE_DEVICES`` gives each
    process one GPU of its own (a scheduler's per-task binding), ``cuda:0`` is a different GPU in each process,
    so the GPU counts are not checked.
    """
    if not is_distributed():
        return
    if backend == "auto" and dist.is_available() and dist.is_initialized():
        backend = str(dist.get_backend())
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" and dist.is_available() and dist.is_nccl_available() else "gloo"
    if backend != "nccl":
        return
    from ._errors import InputError
    from ._messages import arg

    gloo = arg("scgpcl.distributed.init(backend='gloo') before building the model", "--dist-backend gloo")
    if not torch.cuda.is_available():
        raise InputError(NCCL_WITHOUT_CUDA)
    if device.type != "cuda":
        raise InputError(f"nccl exchanges tensors between GPUs, but this run trains on {device.type!r} "
                         f"({arg('device=', '--device ')}{device}); use {gloo} to train on the CPU")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and len([v for v in visible.split(",") if v.strip()]) == 1:
        return  # one GPU per process, chosen by whoever started it
    local = _env_int("LOCAL_WORLD_SIZE", 0)  # processes on this machine (torchrun and --processes set it)
    if device.index is not None and local > 1:
        raise InputError(f"{arg('device=', '--device ')}{device} puts all {local} processes on this machine on one "
                         f"GPU, which nccl refuses; use {arg('device=', '--device ')}cuda (process i on GPU i) or "
                         f"{gloo}")
    n = torch.cuda.device_count()
    if local > n:
        raise InputError(f"{local} processes on this machine but {n} CUDA GPU(s): nccl needs a GPU per process; "
                         f"start at most {n} (--processes / torchrun --nproc-per-node), or use {gloo}")


def rank_device(device: torch.device) -> torch.device:
    """``device`` for this process: a CUDA device without an index becomes ``cuda:LOCAL_RANK`` in a multi-process run."""
    if device.type == "cuda" and device.index is None and is_distributed():
        n = torch.cuda.device_count()
        return torch.device("cuda", local_rank() % max(n, 1))
    return device


# ------------------------------------------------------------------ the communicator
@dataclass
class Communicator:
    """The process group as training uses it.

    Every collective takes a ``what`` (for the error message) and raises
    :class:`DistributedError` when the other processes are gone or do not
    answer within the group's timeout. With one process every collective is
    the identity, so the same code runs with and without a group.
    """

    rank: int = 0
    world_size: int = 1
    backend: str = "none"
    #: BatchNorm statistics over the whole global minibatch (True) or each process's part (docs/distributed.md)
    sync_batchnorm: bool = True
    timeout: datetime.timedelta = field(default_factory=lambda: datetime.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES))
    #: the group of the gradient all-reduces and the global steps
    group: Any = None
    #: a second group for the collectives inside a forward/backward pass (synchronised BatchNorm, gathered
    #: negatives): its own connections, so they never interleave with DDP's background gradient all-reduces
    aux_group: Any = None
    #: where collective tensors must live (CUDA for nccl)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    # -------------------------------------------------------------- sharding
    def sizes(self, n: int) -> list[int]:
        """How ``n`` items are split over the ranks: near-equal contiguous parts, the first ones one larger."""
        size, extra = divmod(n, self.world_size)
        return [size + (r < extra) for r in range(self.world_size)]

    def shard(self, n: int) -> slice:
        """The contiguous part of ``n`` items that is this rank's (see :meth:`sizes`)."""
        sizes = self.sizes(n)
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])

    # -------------------------------------------------------------- collectives
    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn a failed collective inside the body into a :class:`DistributedError` naming ``what``."""
        try:
            yield
        except DistributedError:
            raise
        except RuntimeError as err:  # gloo and nccl errors (DistBackendError is a RuntimeError)
            if is_allocation_failure(err):  # this process's own memory (a gather's buffer): the memory advice applies
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DistributedError(
                f"{what} failed in process {self.rank} of {self.world_size}: another process ended (an error, a "
                f"signal, out of memory) or did not answer within {_minutes(self.timeout)}; see its messages "
                f"[{clip(first)}]"
            ) from err

    def _to_comm(self, t: torch.Tensor) -> torch.Tensor:
        return t if t.device == self.device else t.to(self.device)

    def all_reduce(self, t: torch.Tensor, what: str = "an all-reduce") -> torch.Tensor:
        """The element-wise sum of ``t`` over the ranks (a new tensor on ``t``'s device)."""
        if self.world_size == 1:
            return t
        buf = self._to_comm(t).clone()
        with self.guard(what):
            dist.all_reduce(buf, group=self.group)
        return buf.to(t.device)

    def all_gather_rows(self, x: torch.Tensor, what: str = "a gather") -> torch.Tensor:
        """Every rank's rows of ``x`` concatenated in rank order (the row counts may differ)."""
        if self.world_size == 1:
            return x
        with self.guard(what):
            sizes = self._exchange_sizes(len(x), self.group)
            parts = _padded_all_gather(self._to_comm(x.contiguous()), sizes, self.group)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(x.device)

    def broadcast_object(self, obj: Any, what: str = "a broadcast") -> Any:
        """Rank 0's ``obj`` (any picklable object) on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj if self.is_main else None]
        with self.guard(what):
            dist.broadcast_object_list(box, src=0, group=self.group, device=self.device if self.backend == "nccl"
                                       else None)
        return box[0]

    def broadcast(self, t: torch.Tensor, what: str = "a broadcast") -> torch.Tensor:
        """Rank 0's tensor ``t`` (same shape and type on every rank) on every rank."""
        if self.world_size == 1:
            return t
        buf = self._to_comm(t).clone()
        with self.guard(what):
            dist.broadcast(buf, src=0, group=self.group)
        return buf.to(t.device)

    def agree(self, flag: bool, what: str = "a stopping decision") -> bool:
        """Rank 0's ``flag`` on every rank: decisions are taken once, so every rank stops at the same step."""
        if self.world_size == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.broadcast(t, what).item() > 0.5)

    def run_on_main(self, fn, what: str) -> Any:
        """``fn()`` computed on rank 0 alone, its result on every rank; if it raises, every rank raises."""
        if self.world_size == 1:
            return fn()
        outcome, error = None, None
        if self.is_main:
            try:
                outcome = (True, fn())
            except Exception as err:
                outcome, error = (False, f"{type(err).__name__}: {err}"), err
        ok, value = self.broadcast_object(outcome, what)
        if ok:
            return value
        if error is not None:
            raise error
        raise DistributedError(f"{what} failed in process 0 ({value})")

    def gather_counts(self, n: int, what: str = "a gather of counts") -> list[int]:
        """Every rank's ``n``, in rank order."""
        if self.world_size == 1:
            return [n]
        with self.guard(what):
            return self._exchange_sizes(n, self.group)

    def _exchange_sizes(self, n: int, group) -> list[int]:
        t = torch.tensor([n], dtype=torch.int64, device=self.device)
        out = [torch.zeros_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t, group=group)
        return [int(v.item()) for v in out]

    # ------------------------------------------------ differentiable collectives
    def sum_with_grad(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of ``x`` over the ranks, differentiable (its gradient is the sum of the ranks' gradients)."""
        if self.world_size == 1:
            return x
        return _AllReduceSum.apply(x, self)

    def gather_with_grad(self, x: torch.Tensor, cells: list[int] | None = None) -> tuple[torch.Tensor, int]:
        """Every rank's rows of ``x`` in rank order, differentiable, and where this rank's rows start.

        The gradient of a rank's rows is the sum of what every rank's loss
        sends back to them, so a loss that contrasts its own rows with every
        rank's rows gets the same gradient as one process holding all of them.
        ``cells``: every rank's number of minibatch cells, if known; when ``x``
        has a whole number of rows per cell (two views: two) the row counts
        follow from it and need not be exchanged.
        """
        if self.world_size == 1:
            return x, 0
        mine = cells[self.rank] if cells else 0
        if mine and len(x) % mine == 0:
            sizes = [c * (len(x) // mine) for c in cells]
        else:
            with self.guard("the gather of the minibatch's representations"):
                sizes = self._exchange_sizes(len(x), self.aux_group)
        return _GatherRows.apply(x, self, sizes), sum(sizes[: self.rank])


def _padded_all_gather(x: torch.Tensor, sizes: list[int], group) -> list[torch.Tensor]:
    m = max(sizes)
    if len(x) < m:
        x = torch.cat([x, x.new_zeros((m - len(x), *x.shape[1:]))])
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x, group=group)
    return parts


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        buf = comm._to_comm(x).clone()
        with comm.guard("the synchronised BatchNorm statistics"):
            dist.all_reduce(buf, group=comm.aux_group)
        return buf.to(x.device)

    @staticmethod
    def backward(ctx, grad):
        comm = ctx.comm
        buf = comm._to_comm(grad).contiguous().clone()
        with comm.guard("the synchronised BatchNorm gradient"):
            dist.all_reduce(buf, group=comm.aux_group)
        return buf.to(grad.device), None


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm, sizes):
        ctx.comm, ctx.sizes = comm, sizes
        with comm.guard("the gather of the minibatch's representations"):
            parts = _padded_all_gather(comm._to_comm(x.contiguous()), sizes, comm.aux_group)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(x.device)

    @staticmethod
    def backward(ctx, grad):
        comm, sizes = ctx.comm, ctx.sizes
        buf = comm._to_comm(grad).contiguous().clone()
        with comm.guard("the gradient of the gathered representations"):
            dist.all_reduce(buf, group=comm.aux_group)
        start = sum(sizes[: comm.rank])
        return buf[start : start + sizes[comm.rank]].to(grad.device), None, None


def _minutes(t: datetime.timedelta) -> str:
    m = t.total_seconds() / 60
    return f"{m:g} minute{'s' if m != 1 else ''}" if m >= 1 else f"{t.total_seconds():g} s"


# ------------------------------------------------------------------ joining and leaving
#: The communicator of this process once :func:`init` ran.
_current: Communicator | None = None
#: whether :func:`init` created the default group (and :func:`shutdown` may destroy it)
_owns_group = False

SINGLE = Communicator()


def check_backend(backend: str) -> str:
    """``backend`` if known (``auto``, ``gloo``, ``nccl``); ValueError otherwise."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(_BACKENDS)}")
    return backend


def init(*, backend: str = "auto", timeout: float | datetime.timedelta | None = None, sync_batchnorm: bool = True,
         device: torch.device | str | None = None) -> Communicator:
    """Join the process group of a multi-process run (if this is one) and return this process's :class:`Communicator`.

    Called by :meth:`scgpcl.SCGPCL.train` (with the defaults) and by
    ``scgpcl cluster`` (with its ``--dist-*`` options) once the input has been
    checked, so that bad input ends every process with the same error before
    any of them waits for the others. Joining is a collective: every process
    must call it. Without ``WORLD_SIZE > 1`` in the environment and without an
    initialised group, nothing happens and a one-process communicator is
    returned. A group initialised by the caller is used as it is (its backend
    and timeout); the first call decides the settings, later calls return the
    same communicator.

    Parameters
    ----------
    backend
        ``"auto"`` (nccl when training on CUDA, gloo on the CPU), ``"gloo"`` or ``"nccl"``.
    timeout
        How long a collective waits for the other processes (minutes, or a
        ``timedelta``); then the run ends with a :class:`DistributedError`
        rather than hanging. Default 15 minutes.
    sync_batchnorm
        BatchNorm statistics over the whole global minibatch (the default, as
        one process would compute them) or over each process's part.
    device
        The training device (chooses the ``auto`` backend).
    """
    global _current, _owns_group
    if _current is not None:
        return _current
    check_backend(backend)
    if timeout is None:
        timeout = datetime.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES)
    elif not isinstance(timeout, datetime.timedelta):
        timeout = datetime.timedelta(minutes=float(timeout))
    dev = torch.device(device) if device is not None else torch.device("cpu")
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised and world_size() == 1:
        return Communicator(sync_batchnorm=sync_batchnorm, timeout=timeout)
    if not dist.is_available():  # pragma: no cover - torch built without distributed support
        raise DistributedError("this torch was built without torch.distributed; run one process")
    if not initialised:
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            if not torch.cuda.is_available():
                from ._errors import InputError

                raise InputError(NCCL_WITHOUT_CUDA)
            torch.cuda.set_device(rank_device(dev if dev.type == "cuda" else torch.device("cuda")))
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise DistributedError(f"WORLD_SIZE={world_size()} but {' and '.join(missing)} not set: start the "
                                   "processes with torchrun (or scgpcl cluster --processes P)")
        try:
            dist.init_process_group(backend=backend, timeout=timeout)
        except RuntimeError as err:
            raise JoinFailed(f"could not join the process group of {world_size()} processes at "
                             f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within "
                             f"{_minutes(timeout)}: {str(err).splitlines()[0] if str(err) else err!r}") from err
        _owns_group = True
    else:
        backend = dist.get_backend()
    comm_device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    comm = Communicator(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=str(backend),
                        sync_batchnorm=sync_batchnorm, timeout=timeout, group=dist.group.WORLD, device=comm_device)
    if comm.world_size > 1:
        with comm.guard("creating the second process group"):
            comm.aux_group = dist.new_group(backend=str(backend), timeout=timeout)
        log.info("data-parallel training: process %d of %d (%s backend, BatchNorm statistics %s)", comm.rank,
                 comm.world_size, comm.backend, "synchronised" if sync_batchnorm else "per process")
    _current = comm
    return comm


def current() -> Communicator:
    """The communicator of this process: :func:`init`'s, joining the group with the defaults if there is one to join."""
    if _current is not None:
        return _current
    if (dist.is_available() and dist.is_initialized()) or world_size() > 1:
        return init()
    return SINGLE


def shutdown() -> None:
    """Leave the process group (destroying it if :func:`init` created it); safe to call more than once.

    A process that leaves a broken group without destroying it can abort at
    exit (``terminate called without an active exception``); the ``scgpcl``
    command calls this at the end of every run.
    """
    global _current, _owns_group
    if _owns_group and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    _current, _owns_group = None, False
