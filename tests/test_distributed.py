"""Data-parallel training (docs/distributed.md) on two gloo processes on this CPU.

Each multi-process test runs its ranks in spawned processes on tiny data with
a deadline (``run_ranks``), or the ``scgpcl`` command in subprocesses with a
timeout, so a bug cannot hang the test run.
"""

from __future__ import annotations

import os
import pickle
import queue
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from scgpcl import SCGPCL, InputError
from scgpcl.data import SubgraphLoader, prepare
from scgpcl.data._sharded import ShardedLoader
from scgpcl.distributed import Communicator, DistributedError
from scgpcl.module import LossContext, SCGPCLModule
from scgpcl.module._sync_batchnorm import convert_sync_batchnorm
from scgpcl.train._distributed import DataParallelStep
from scgpcl.train._distributed_kmeans import lloyd_kmeans
from scgpcl.train._loop import run_round
from scgpcl.train._schedule import Progress

from helpers import TINY, toy_counts

ENV = dict(os.environ, OMP_NUM_THREADS="1")


# ----------------------------------------------------------------------------- running ranks
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn, rank, world, port, args, results, comm_timeout):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from scgpcl import distributed

    try:
        comm = distributed.init(timeout=comm_timeout / 60, sync_batchnorm=True)
        # plain pickle: torch's own reduction would share the tensors' memory with a process about to end
        results.put((rank, True, pickle.dumps(fn(comm, *args))))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
    finally:
        distributed.shutdown()


def run_ranks(fn, *args, world: int = 2, timeout: float = 120.0, comm_timeout: float = 60.0,
              expect: tuple[int, ...] | None = None) -> dict[int, object]:
    """``fn(comm, *args)`` in ``world`` spawned processes of one gloo group; each rank's return value.

    ``expect``: the ranks whose results to wait for (default all; a rank that
    exits on purpose returns nothing). The test fails if a rank raises or the
    ranks do not finish within ``timeout`` seconds; leftover processes are killed.
    """
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, port, args, results, comm_timeout), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    wanted = set(range(world) if expect is None else expect)
    out, deadline = {}, time.monotonic() + timeout
    try:
        while wanted - set(out):
            try:
                rank, ok, value = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"ranks {sorted(wanted - set(out))} did not finish within {timeout} s")
            if not ok:
                pytest.fail(f"rank {rank} failed:\n{value}")
            out[rank] = pickle.loads(value)
    finally:
        for p in procs:
            p.join(timeout=max(1.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
    return out


# ----------------------------------------------------------------------------- one step
_STEP_CELLS = torch.tensor([0, 2, 3, 5, 8, 9, 11, 14, 15, 17, 20, 22, 23])  # 13 cells: 7 + 6 on two ranks


def _mlp_model_and_loader():
    a = toy_counts(n_per=8, n_genes=40)
    data = prepare(a.X, a.var_names.to_numpy())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = SCGPCLModule(data.n_genes, encoder="mlp", encoder_dims=(16, 8), gene_embedding_dim=8,
                              decoder_dim=16)
    loader = SubgraphLoader(data, uses_graph=False, feature_drop=(0.0, 0.0), gene_dim=8)
    return module, loader


def _one_step(module, loader, targets, step) -> dict:
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    record = step(module, loader, [targets], opt, LossContext("pretrain", tau=0.25), {"zinb": 1.0, "ins": 1.0},
                  Progress(1, "", enabled=False), n_views=2, mask=False)
    return {"record": record,
            "params": {n: p.detach().clone() for n, p in module.named_parameters()},
            "grads": {n: (p.grad if p.grad is not None else torch.zeros_like(p)).clone()
                      for n, p in module.named_parameters()},
            "buffers": {n: b.clone() for n, b in module.named_buffers()}}


def _data_parallel_steps(comm):
    part = _STEP_CELLS[comm.shard(len(_STEP_CELLS))]
    out = {}
    for sync in (True, False):
        comm.sync_batchnorm = sync
        module, loader = _mlp_model_and_loader()
        if sync:
            convert_sync_batchnorm(module, comm)
        out[sync] = _one_step(module, loader, part, DataParallelStep(module, comm).run_round)
    return out


def test_one_data_parallel_step_equals_one_step_on_the_whole_batch():
    """Two gloo ranks, each with its part (7 and 6 cells) of a 13-cell batch, take the same SGD step as one
    process on the whole batch: the same gradients, parameters, BatchNorm running statistics and losses.

    What makes this exact, and what the test therefore checks: each rank's loss is scaled by its share of
    the batch, so DDP's averaged gradient is the gradient of the whole batch's mean loss (also with unequal
    parts); the instance-wise InfoNCE of a rank contrasts its cells with the cells of both ranks, through the
    differentiable gather; BatchNorm normalises with the statistics of the whole batch (SyncBatchNorm1d).
    The objective is the ZINB reconstruction plus the instance-wise loss, so both kinds of term are covered.

    Why this is the right piece to compare: the MLP encoder reads only the target cells' features, and the
    views are unmasked, so a rank's view of its cells is exactly what one process computes for them; with
    the graph encoder each rank samples its own subgraph around its own cells, which no single-process step
    reproduces. SGD (not Adam, whose first step is the gradient's sign) makes the parameters show the
    gradient's size. The same step with per-rank BatchNorm is *not* equal: the test checks that too, so it
    shows what synchronised BatchNorm buys.
    """
    module, loader = _mlp_model_and_loader()
    single = _one_step(module, loader, _STEP_CELLS, run_round)
    ranks = run_ranks(_data_parallel_steps)
    for rank in (0, 1):
        dp = ranks[rank][True]
        for kind in ("grads", "params", "buffers"):
            for name, ref in single[kind].items():
                got = dp[kind][name]
                assert torch.allclose(got.float(), ref.float(), rtol=1e-4, atol=1e-6), (rank, kind, name)
        for key, value in single["record"].items():
            assert dp["record"][key] == pytest.approx(value, rel=1e-5), key
    for name in single["params"]:  # the two ranks hold the same parameters
        assert torch.equal(ranks[0][True]["params"][name], ranks[1][True]["params"][name]), name
    per_rank_bn = ranks[0][False]["grads"]
    worst = max(float((per_rank_bn[n] - g).abs().max() / (g.abs().max() + 1e-12)) for n, g in single["grads"].items())
    assert worst > 1e-3  # per-rank statistics change the gradient: what the exact case needs SyncBatchNorm1d for


# ----------------------------------------------------------------------------- k-means
def _blobs(n=301, d=6, k=5, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(0, 1.5, (n, d))).astype(np.float32)


def _kmeans_starts(x: np.ndarray) -> dict:
    far = x[:5].copy()
    far[4] += 1000.0  # an empty cluster at the first iteration: moved to the farthest point
    return {"init": dict(n_init=0, init=x[:5]), "plusplus": dict(n_init=3, seed=7), "empty": dict(n_init=0, init=far)}


def _distributed_kmeans(comm, x):
    mine = x[comm.shard(len(x))]
    out = {}
    for name, kw in _kmeans_starts(x).items():
        r = lloyd_kmeans(mine, 5, comm=comm, **kw)
        out[name] = (r.labels, r.centres, r.inertia)
    return out


def test_distributed_kmeans_equals_one_process_from_the_same_start():
    """Lloyd's k-means over two ranks' rows (151 and 150) finds the centres, labels and inertia of one
    process from the same start: given centres, k-means++ starts (their sample is every row, gathered), and
    a start whose empty cluster must be moved. From given centres it also matches scikit-learn's Lloyd."""
    x = _blobs()
    ranks = run_ranks(_distributed_kmeans, x)
    for name, kw in _kmeans_starts(x).items():
        single = lloyd_kmeans(x, 5, **kw)
        labels = np.concatenate([ranks[0][name][0], ranks[1][name][0]])
        assert np.array_equal(labels, single.labels), name
        for r in (0, 1):
            np.testing.assert_allclose(ranks[r][name][1], single.centres, rtol=1e-5, atol=1e-5, err_msg=name)
            assert ranks[r][name][2] == pytest.approx(single.inertia, rel=1e-6), name
    sk = KMeans(5, init=x[:5], n_init=1, algorithm="lloyd").fit(x)
    single = lloyd_kmeans(x, 5, n_init=0, init=x[:5])
    np.testing.assert_allclose(single.centres, sk.cluster_centers_, atol=1e-4)
    assert np.array_equal(single.labels, sk.labels_)


# ----------------------------------------------------------------------------- the global steps
def _fixed_centres(d: int) -> torch.Tensor:
    return torch.randn(3, d, generator=torch.Generator().manual_seed(3))


def _global_steps(comm=None) -> dict:
    """Every cell's representation, the sample's, and fine-tuning's DEC target and labels of an untrained model."""
    model = SCGPCL(toy_counts(), 3, random_state=0, sample_cells=100, **TINY)
    tr = model.trainer
    out = {"all": tr.embed().numpy(), "sample": tr.embedder.of_sample().numpy(),
           "sample_ids": tr.embedder.sample_ids()}
    tr.module.init_cluster_centres(_fixed_centres(tr.module.n_latent))
    plan = tr.loader.plan(1)
    ctx, labels = tr.finetune_stage(tr)._context(plan)
    out["target"] = ctx.target[torch.from_numpy(out["sample_ids"])].numpy()
    out["labels"] = labels
    out["stage"] = type(tr.finetune_stage(tr)).__name__
    return out


def _joined_parts(comm=None) -> dict:
    """The sample's feature PCs and fine-tuning's DEC target with the joined target (``dec_pca_target``), from
    fixed labels and centres, on an untrained model."""
    from scgpcl.train._joined import JoinedTarget

    model = SCGPCL(toy_counts(), 3, random_state=0, sample_cells=100, **TINY)
    tr = model.trainer
    pca, pcs = tr.sample_feature_pcs()
    z_s = tr.embedder.of_sample()
    labels = np.arange(len(z_s)) % 3
    tr.joined_target = JoinedTarget(pca, pcs, z_s, labels, 3, 0.5)
    tr.module.init_cluster_centres(_fixed_centres(tr.module.n_latent))
    plan = tr.loader.plan(1)
    ctx, out_labels = tr.finetune_stage(tr)._context(plan)
    return {"options": (type(tr).__name__, tr.cfg.kmeans_pca_weight, tr.cfg.dec_pca_target), "pcs": pcs,
            "target": ctx.target.numpy(), "labels": out_labels, "sample_ids": tr.embedder.sample_ids(),
            "missing": tr.embedder.missing(torch.cat(plan)).numpy()}  # a rank's plan: its part of each minibatch


def test_several_processes_keep_the_joined_start_and_its_dec_target():
    """The default joined k-means start and joined DEC target run over two ranks as in one process: the same
    principal components of the sample (up to each axis's sign), the same DEC target for the sample (from each
    rank's share) and for the cells outside it that a rank trains on (from their PCs), and the labels from the
    representation."""
    single = _joined_parts()
    ranks = run_ranks(_joined_parts)
    assert single["options"] == ("Trainer", 0.5, True)
    assert len(single["missing"]) > 0  # the round trains on cells outside the sample too
    np.testing.assert_array_equal(np.sort(np.concatenate([ranks[0]["missing"], ranks[1]["missing"]])),
                                  np.sort(single["missing"]))
    for r in (0, 1):
        assert ranks[r]["options"] == ("DistributedTrainer", 0.5, True)
        signs = np.sign((ranks[r]["pcs"] * single["pcs"]).sum(0))
        np.testing.assert_allclose(ranks[r]["pcs"] * signs, single["pcs"], rtol=1e-6, atol=1e-8)
        rows = np.concatenate([single["sample_ids"], ranks[r]["missing"]])
        assert np.abs(single["target"][rows]).sum() > 0
        np.testing.assert_allclose(ranks[r]["target"][rows], single["target"][rows], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(ranks[r]["labels"], single["labels"])
    np.testing.assert_array_equal(ranks[0]["pcs"], ranks[1]["pcs"])  # one set of axes, signs included


def test_distributed_embedding_and_dec_target_equal_one_process():
    """Sharded over two ranks (the genes' states from all-reduced sums and degrees, the rows gathered), the
    representation of every cell and of the global steps' sample, and fine-tuning's DEC target (Q per rank,
    cluster frequencies all-reduced) and labels, equal those of one process with the same weights."""
    single = _global_steps()
    ranks = run_ranks(_global_steps)
    assert single["stage"] == "FinetuneStage"
    for r in (0, 1):
        assert ranks[r]["stage"] == "DistributedFinetuneStage"
        np.testing.assert_array_equal(ranks[r]["sample_ids"], single["sample_ids"])
        for key in ("all", "sample", "target"):
            np.testing.assert_allclose(ranks[r][key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
        np.testing.assert_array_equal(ranks[r]["labels"], single["labels"])


def test_sharded_loader_splits_every_global_minibatch():
    """The ranks plan the global minibatches of one process and take disjoint parts; their views' streams
    differ (seeded with the rank), the cell budget of the views is shared, and a minibatch too small to give
    each rank two cells is refused before any rank waits for the others."""
    data = prepare(toy_counts().X, toy_counts().var_names.to_numpy())
    kw = dict(batch_size=50, num_samples=(64, 40), seed=5)
    one = SubgraphLoader(data, **kw).plan(7)
    parts = [ShardedLoader(data, rank=r, world_size=2, **kw) for r in (0, 1)]
    plans = [p.plan(7) for p in parts]
    for step, targets in enumerate(one):
        assert torch.equal(torch.cat([plans[0][step], plans[1][step]]), targets)
    assert parts[0].sampler.num_samples == (64, 20)
    genes = [p.view(plans[0][0], 0).genes for p in parts]  # the same cells, each rank's own sampling stream
    assert len(genes[0]) == len(genes[1]) == 64 and not torch.equal(genes[0], genes[1])
    from scgpcl import InputError

    with pytest.raises(InputError, match="cannot be split over 8 processes"):
        ShardedLoader(data, rank=0, world_size=8, batch_size=10)


# ----------------------------------------------------------------------------- failures
def _timed_all_reduce(comm):
    """(the error message or None, seconds) of one all-reduce."""
    t0 = time.monotonic()
    try:
        comm.all_reduce(torch.ones(3), "a test all-reduce")
    except DistributedError as err:
        return str(err), time.monotonic() - t0
    return None, time.monotonic() - t0


def _one_dies(comm):
    if comm.rank == 1:
        os._exit(3)
    return _timed_all_reduce(comm)


def _one_hangs(comm):
    if comm.rank == 1:
        time.sleep(8)
        os._exit(0)
    return _timed_all_reduce(comm)


def test_a_rank_that_dies_or_hangs_ends_the_others_with_a_clear_error():
    """A collective whose peer died fails at once, and one whose peer hangs fails at the timeout, both with
    a DistributedError that says what happened; neither waits forever."""
    message, seconds = run_ranks(_one_dies, expect=(0,), comm_timeout=60.0)[0]
    assert message is not None and seconds < 30
    assert message.startswith("a test all-reduce failed in process 0 of 2: another process ended")
    message, seconds = run_ranks(_one_hangs, expect=(0,), comm_timeout=3.0)[0]
    assert message is not None and 2.0 < seconds < 8.0
    assert "did not answer within 3 s" in message


def _different_scaling(comm) -> str | None:
    target_sum = 0.0 if comm.rank == 0 else 1e4  # as if choose_target_sum had picked differently on rank 1
    model = SCGPCL(toy_counts(), 3, random_state=0, target_sum=target_sum, **TINY)
    try:
        _ = model.trainer  # joins the group: the check runs here
    except InputError as err:
        return str(err)
    return None


def test_processes_with_different_features_refuse_to_train_together():
    """Ranks that prepared different features (here another cell scaling) each raise the same InputError
    when the trainer joins the group, instead of training one model on different data."""
    ranks = run_ranks(_different_scaling)
    assert ranks[0] is not None and ranks[0] == ranks[1]
    assert ranks[0].startswith("the processes prepared different data")
    assert "process 0: 180 cells" in ranks[0] and "process 1: 180 cells" in ranks[0]


def test_collectives_of_one_process_are_the_identity():
    comm = Communicator()
    x = torch.arange(6.0).reshape(3, 2)
    assert comm.all_reduce(x) is x and comm.all_gather_rows(x) is x and comm.gather_with_grad(x) == (x, 0)
    assert comm.agree(True) is True and comm.run_on_main(lambda: 7, "a test") == 7
    assert comm.sizes(5) == [5] and comm.shard(5) == slice(0, 5)
    assert Communicator(rank=1, world_size=3).sizes(10) == [4, 3, 3]
    assert Communicator(rank=1, world_size=3).shard(10) == slice(4, 7)



def test_the_guard_names_a_lost_process_but_leaves_this_processs_own_memory_failure_alone():
    """A gather buffer that this process could not allocate was reported as "another process ended", and
    the command then gave no memory advice."""
    from scgpcl.cli import _out_of_memory

    comm = Communicator(rank=0, world_size=2)
    with (pytest.raises(DistributedError, match="a gather failed in process 0 of 2: another process ended"),
          comm.guard("a gather")):
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer")
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.50 GiB")
    for err in (oom, RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")):
        with pytest.raises(type(err)) as caught, comm.guard("a gather"):
            raise err
        assert caught.value is err and _out_of_memory(caught.value)


# ----------------------------------------------------------------------------- the command
def _toy_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.h5ad"
    toy_counts().write_h5ad(path)
    return path


def _scgpcl(*args: str, timeout: float = 180.0, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scgpcl", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, **kw)


TINY_FLAGS = ["--pretrain-rounds", "3", "--warmup-rounds", "1", "--finetune-rounds", "2", "--kmeans-n-init", "5",
              "--kmeans-n-init-round", "2", "--min-round-steps", "1"]


def test_bad_input_under_two_processes_is_one_error_and_no_hang(tmp_path):
    """Every process checks the same input before any process group exists; rank 0 alone says what is wrong,
    the launcher stops the others, and nothing waits for a process that is gone."""
    toy = _toy_file(tmp_path)
    t0 = time.monotonic()
    res = _scgpcl("cluster", str(toy), str(tmp_path / "out.h5ad"), "-k", "1000", "--processes", "2")
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("scgpcl: error: --n-clusters 1000 is more than the number"), \
        res.stderr
    assert time.monotonic() - t0 < 90
    assert not (tmp_path / "out.h5ad").exists()


def test_central_kmeans_selection_is_refused_with_two_processes(tmp_path):
    """k-means over several processes keeps the lowest inertia; asking for the central run says so, once,
    before any process group exists (so no process waits for another)."""
    toy = _toy_file(tmp_path)
    res = _scgpcl("cluster", str(toy), str(tmp_path / "out.h5ad"), "-k", "3", "--processes", "2",
                  "--kmeans-select", "central", "--quiet", *TINY_FLAGS)
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "kmeans_select='central' is not available with several processes" in errors[0], \
        res.stderr
    assert not (tmp_path / "out.h5ad").exists()


def test_command_refuses_central_kmeans_for_several_processes_without_a_process_group(monkeypatch):
    """The command's check runs from the launcher's environment alone (no torch.distributed state);
    one process, or kmeans_select='inertia', passes it."""
    import torch.distributed as dist

    from scgpcl import cli
    from scgpcl._config import SCGPCLConfig

    central = SCGPCLConfig().override(kmeans_select="central")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="kmeans_select='central' is not available with several processes"):
        cli._check_multi_process_options(central)
    assert not dist.is_initialized()
    cli._check_multi_process_options(SCGPCLConfig())  # inertia: accepted
    monkeypatch.setenv("WORLD_SIZE", "1")
    cli._check_multi_process_options(central)  # one process: accepted


def _fake_gpus(monkeypatch, gpus: int, local: int, world: int = 2) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)


@pytest.mark.parametrize("device, local, gpus, backend, python, command", [
    ("cuda:0", 2, 2, "auto", "device=cuda:0 puts all 2 processes on this machine on one GPU",
     "--device cuda:0 puts all 2 processes on this machine on one GPU, which nccl refuses; use --device cuda"),
    ("cuda", 3, 2, "nccl", "3 processes on this machine but 2 CUDA GPU(s): nccl needs a GPU per process",
     "start at most 2 (--processes / torchrun --nproc-per-node), or use --dist-backend gloo"),
    ("cpu", 2, 2, "nccl", "this run trains on 'cpu' (device=cpu); use scgpcl.distributed.init(backend='gloo')",
     "this run trains on 'cpu' (--device cpu); use --dist-backend gloo"),
    ("cuda", 2, 0, "nccl", "--dist-backend nccl needs CUDA GPUs", "--dist-backend nccl needs CUDA GPUs"),
])
def test_processes_nccl_cannot_give_a_gpu_each_are_refused_before_any_work(monkeypatch, device, local, gpus,
                                                                             backend, python, command):
    # nccl refuses two processes on one GPU (and CPU tensors) only at the first collective, after reading and
    # preparing the data, and then each process blamed another; CUDA is faked: the check only counts devices
    from scgpcl import distributed
    from scgpcl._messages import cli_context

    _fake_gpus(monkeypatch, gpus, local, world=max(2, local))
    with pytest.raises(InputError, match=re.escape(python)):
        distributed.check_process_devices(torch.device(device), backend)
    with cli_context(), pytest.raises(InputError, match=re.escape(command)):
        distributed.check_process_devices(torch.device(device), backend)


def test_processes_that_can_each_have_a_gpu_or_use_gloo_pass_the_device_check(monkeypatch):
    from scgpcl import distributed

    _fake_gpus(monkeypatch, gpus=2, local=2)
    distributed.check_process_devices(torch.device("cuda"))  # one GPU each
    distributed.check_process_devices(torch.device("cuda:0"), "gloo")  # gloo may share a GPU
    distributed.check_process_devices(torch.device("cpu"))  # auto on the CPU is gloo
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # a scheduler gave each process a GPU of its own
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    distributed.check_process_devices(torch.device("cuda:0"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one process per machine: its own GPU 0
    distributed.check_process_devices(torch.device("cuda:0"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    distributed.check_process_devices(torch.device("cuda"), "nccl")  # one process: nothing to share


def test_the_model_leaves_the_device_check_to_the_command_which_knows_its_backend(monkeypatch):
    # SCGPCL() checked with backend 'auto' (nccl on CUDA) and refused 'scgpcl cluster --dist-backend gloo' on a
    # shared GPU after reading the data; the command checks before reading, with the backend it was given
    from scgpcl._messages import cli_context
    from scgpcl.model import _scgpcl

    calls = []
    monkeypatch.setattr(_scgpcl, "check_process_devices", lambda device: calls.append(device))
    data = toy_counts(n_per=10, n_genes=30)
    with cli_context():
        SCGPCL(data, 3, device="cpu", **TINY)
    assert calls == []
    SCGPCL(data, 3, device="cpu", **TINY)  # from Python: the model is where the check happens
    assert calls == [torch.device("cpu")]


def test_bad_input_under_torchrun_is_one_error(tmp_path):
    """Under torchrun the same: one line from scgpcl (torchrun then prints its own report of the failure)."""
    toy = _toy_file(tmp_path)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "scgpcl", "cluster", str(toy), str(tmp_path / "out.h5ad"), "-k", "1000", "--quiet"],
                         capture_output=True, text=True, env=ENV, timeout=180)
    assert res.returncode != 0
    ours = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith(("scgpcl:", "scgpcl ("))]
    assert len(ours) == 1 and ours[0].startswith("scgpcl: error: --n-clusters 1000"), res.stderr
    assert not (tmp_path / "out.h5ad").exists()


def test_processes_two_clusters_and_rank_0_writes_in_input_order(tmp_path):
    toy = _toy_file(tmp_path)
    out, saved = tmp_path / "out.h5ad", tmp_path / "model"
    res = _scgpcl("cluster", str(toy), str(out), "-k", "3", "--processes", "2", "--label-key", "cell_type",
                  "--save-model", str(saved), "--quiet", *TINY_FLAGS)
    assert res.returncode == 0, res.stderr
    assert "x 2 processes" in res.stdout and res.stdout.count("wrote") == 2, res.stdout
    result, source = ad.read_h5ad(out), ad.read_h5ad(toy)
    assert list(result.obs_names) == list(source.obs_names)
    params = result.uns["scgpcl"]["params"]
    assert params["processes"] == 2 and params["dist_backend"] == "gloo" and bool(params["sync_batchnorm"])
    assert "--processes 2" in params["command"]
    assert adjusted_rand_score(source.obs["cell_type"], result.obs["scgpcl"]) > 0.9
    assert result.uns["scgpcl"]["metrics"]["ARI"] > 0.9
    model = SCGPCL.load(saved, source)  # one process, the saved weights: the same labels
    assert adjusted_rand_score(model.predict(), result.obs["scgpcl"].astype(int)) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.h5ad", "toy.h5ad"]


def test_processes_train_on_a_sample_of_fifty_cells_or_fewer(tmp_path):
    # the all-reduced cell count came back as a float, and the features' PCs (at most n - 1 of them) failed
    # with "slice indices must be integers" after all of training when the sample had 50 cells or fewer
    toy = _toy_file(tmp_path)
    res = _scgpcl("cluster", str(toy), str(tmp_path / "out.h5ad"), "-k", "3", "--processes", "2",
                  "--sample-cells", "40", "--quiet", *TINY_FLAGS)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.h5ad").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="nccl is refused only on a machine without CUDA")
def test_nccl_without_cuda_is_one_input_error(tmp_path):
    # it was "AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'" from every process
    toy = _toy_file(tmp_path)
    res = _scgpcl("cluster", str(toy), str(tmp_path / "out.h5ad"), "-k", "3", "--processes", "2",
                  "--dist-backend", "nccl", "--quiet", *TINY_FLAGS)
    assert res.returncode == 2, res.stderr
    ours = [line for line in res.stderr.splitlines() if line.startswith(("scgpcl:", "scgpcl ("))]
    assert len(ours) == 1 and "--dist-backend nccl needs CUDA GPUs" in ours[0], res.stderr
    assert not (tmp_path / "out.h5ad").exists()


def test_processes_make_one_choice_of_the_cell_scaling(tmp_path):
    """The defaults under two processes: each process chooses the cell scaling from the same data and seed, the
    ranks' check that they prepared the same data passes, and the output records the value chosen; the small
    data train rounds of several epochs (min_round_steps=5, the other tests use one-epoch rounds)."""
    toy = _toy_file(tmp_path)
    out = tmp_path / "out.h5ad"
    at = TINY_FLAGS.index("--min-round-steps")
    flags = TINY_FLAGS[:at] + TINY_FLAGS[at + 2:]
    res = _scgpcl("cluster", str(toy), str(out), "-k", "3", "--processes", "2", *flags)
    assert res.returncode == 0, res.stderr
    assert "rounds of 5 steps" in res.stderr, res.stderr
    chosen = re.findall(r"cell scaling: (.+?), chosen by the k-means silhouette", res.stderr)
    assert len(chosen) >= 1 and len(set(chosen)) == 1, res.stderr
    config = ad.read_h5ad(out).uns["scgpcl"]["params"]["config"]
    assert not bool(config["preprocess.choose_target_sum"])
    value = float(config["preprocess.target_sum"])
    assert chosen[0] == ("the median total" if value == 0 else f"{value:g} counts per cell")


def _children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the child processes through /proc")
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_every_process_and_leaves_no_output(tmp_path, signum, code):
    toy = _toy_file(tmp_path)
    out = tmp_path / "out.h5ad"
    proc = subprocess.Popen([sys.executable, "-m", "scgpcl", "cluster", str(toy), str(out), "-k", "3",
                             "--processes", "2", "--pretrain-rounds", "1000", "--warmup-rounds", "1",
                             "--convergence-ari", "2", "--convergence-patience", "0"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "pre-training:" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.read(1) or ""
        assert "pre-training:" in seen, seen
        children = _children_of(proc.pid)
        assert len(children) == 2
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert not any(_alive(pid) for pid in children)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.h5ad"]
    assert "no output written" in err


def test_distributed_options_are_checked(tmp_path, monkeypatch, capsys):
    """--processes and --dist-timeout take positive numbers, and --processes is refused under torchrun (which
    already started the processes); each is one line naming the option, before any process starts."""
    from scgpcl.cli import main

    toy = str(_toy_file(tmp_path))
    for flag, value in (("--processes", "0"), ("--dist-timeout", "0")):
        with pytest.raises(SystemExit) as exc:
            main(["cluster", toy, str(tmp_path / "o.h5ad"), "-k", "3", flag, value])
        assert exc.value.code == 2 and flag in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["cluster", toy, str(tmp_path / "o.h5ad"), "-k", "3", "--processes", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["scgpcl: error: --processes 2 starts its own processes, but this one already is one of 2 "
                   "(torchrun): leave --processes out under torchrun"]


def test_the_launcher_does_not_blame_memory_for_a_kill_of_its_own(capsys):
    # a process the launcher killed after it ignored SIGTERM (a stopped or hung one) was reported as
    # "killed by SIGKILL (out of memory?)"
    from scgpcl._launch import _report

    class Ended:
        def __init__(self, code):
            self.returncode = code

    assert _report([Ended(1), Ended(-signal.SIGKILL)], [], set(), {1}) == 1
    err = capsys.readouterr().err
    assert "out of memory" not in err and "process 1 of 2 did not stop within 10 s of being asked to" in err
    _report([Ended(1), Ended(-signal.SIGKILL)], [], set())  # killed by someone else: memory is the usual cause
    assert "process 1 of 2 was killed by SIGKILL (out of memory?)" in capsys.readouterr().err


def test_a_process_that_cannot_join_says_so_itself(capsys):
    # a rank > 0 given a wrong MASTER_PORT printed no line of its own: join failures were taken for the
    # failures every process shares, which rank 0 alone reports
    from scgpcl.cli import _print_failure
    from scgpcl.distributed import DistributedError, JoinFailed

    _print_failure(JoinFailed("could not join the process group of 2 processes at 127.0.0.1:29612 within 1 "
                              "minute: timed out"), 1, "cluster")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["scgpcl (process 1): error: JoinFailed: could not join the process group of 2 processes at "
                   "127.0.0.1:29612 within 1 minute: timed out"]
    _print_failure(DistributedError("failed in process 1 of 2: another process ended"), 1, "cluster")
    assert capsys.readouterr().err == ""  # a shared failure: rank 0 reports it


def test_a_child_ends_when_its_launcher_is_gone_where_the_kernel_cannot_say(tmp_path):
    # macOS and Windows have no parent-death signal: after `kill -9` of the launcher (or a closed terminal) the
    # --processes children went on training. There they watch a pipe the launcher holds (its parent's pid does not
    # tell on Windows), and end as by SIGTERM, cleaning up
    done = tmp_path / "terminated"
    grandchild = (
        "import os, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(done)!r}, 'w').close(), sys.exit(143)))\n"
        "from scgpcl._launch import _watch_launcher\n"
        "_watch_launcher()\n"
        "print('watching', flush=True)\n"
        "time.sleep(30)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], stdin=subprocess.PIPE, "
         "start_new_session=True)\n"
         "time.sleep(30)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout.readline().strip() == "watching"  # the child runs, and its launcher is alive
        time.sleep(0.3)
        assert not done.exists()  # a launcher alive: the child goes on
        launcher.kill()  # as kill -9: nothing forwarded
        launcher.wait()
        deadline = time.monotonic() + 15
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done.exists()
    finally:
        launcher.kill()
    # a watched child that ends on its own ends cleanly: a thread blocked in sys.stdin's reader held its lock, and
    # the interpreter's shutdown aborted (SIGABRT, exit 134 for every run on macOS and Windows)
    child = subprocess.Popen([sys.executable, "-c", "from scgpcl._launch import _watch_launcher\n_watch_launcher()\n"
                              "print('done', flush=True)\n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done" and child.wait(timeout=30) == 0
    finally:
        child.stdin.close()


def test_where_the_kernel_cannot_end_them_the_children_get_a_pipe_to_watch(monkeypatch):
    from scgpcl import _launch

    monkeypatch.setattr(_launch.sys, "platform", "darwin")
    seen = []
    real_popen = subprocess.Popen

    def popen(args, env=None, stdin=None, preexec_fn=None, **kwargs):
        seen.append((env.get(_launch.PIPE_ENV), stdin, preexec_fn))
        return real_popen([sys.executable, "-c", "pass"], env=env, stdin=stdin, **kwargs)

    monkeypatch.setattr(_launch.subprocess, "Popen", popen)
    assert _launch.run_local(["cluster"], 2) == 0
    assert seen == [("1", subprocess.PIPE, None)] * 2
    monkeypatch.setattr(_launch.sys, "platform", "linux")
    seen.clear()
    assert _launch.run_local(["cluster"], 2) == 0
    assert [(pipe, stdin, fn) for pipe, stdin, fn in seen] == [(None, subprocess.DEVNULL, _launch._die_with_parent)] * 2


def test_the_launcher_shares_the_cores_it_may_use_and_says_when_there_are_too_few(monkeypatch, caplog):
    # it divided os.cpu_count() (the whole node) between the processes: a job given 8 of 128 cores started 2
    # processes of 64 threads each on its 8; and nothing said that 2 processes on 1 core are slower than one
    from scgpcl import _launch

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = {}
    real_popen = subprocess.Popen

    def popen(args, env=None, **kwargs):
        seen.setdefault("threads", []).append(env["OMP_NUM_THREADS"])
        return real_popen([sys.executable, "-c", "pass"], env=env, **kwargs)

    monkeypatch.setattr(_launch.subprocess, "Popen", popen)
    with caplog.at_level("WARNING", logger="scgpcl"):
        assert _launch.run_local(["cluster"], 2) == 0
    assert seen["threads"] == ["1", "1"]
    assert "--processes 2 on 1 usable core: the processes take turns on them" in caplog.text
    assert _launch.usable_cores() == 1
