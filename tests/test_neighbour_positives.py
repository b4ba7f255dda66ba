"""ins_neighbours: the instance loss's neighbour positives (benchmarks/results/neighbour_positives.md)."""

from __future__ import annotations

import numpy as np

import scgpcl.module._losses as losses
import scgpcl.train._pretrain as pretrain
from scgpcl import SCGPCL
from scgpcl._config import TrainConfig, multi_process_problem

from helpers import TINY


def test_neighbour_positives_come_from_the_feature_pcs_and_reach_the_loss_as_batch_rows(toy, monkeypatch):
    tables, calls = [], []
    real_table, real_loss = pretrain.feature_neighbours, losses.info_nce

    def table_spy(trainer, k):
        tables.append(real_table(trainer, k))
        return tables[-1]

    def loss_spy(z1, z2, tau, gather=None, neighbours=None):
        calls.append(neighbours)
        return real_loss(z1, z2, tau, gather=gather, neighbours=neighbours)

    monkeypatch.setattr(pretrain, "feature_neighbours", table_spy)
    monkeypatch.setattr(losses, "info_nce", loss_spy)
    targets = []

    m = SCGPCL(toy, 3, random_state=0, ins_neighbours=5, batch_size=60, sample_cells=120, **TINY)
    real_plan = m.trainer.loader.plan

    def plan_spy(steps):
        out = real_plan(steps)
        targets.extend(out)
        return out

    monkeypatch.setattr(m.trainer.loader, "plan", plan_spy)
    m.train(progress=False)

    assert len(tables) == 1  # found once, before pre-training
    table = tables[0].cpu().numpy()
    assert table.shape == (toy.n_obs, 5)
    sampled = np.flatnonzero((table >= 0).any(axis=1))
    assert len(sampled) == 120 and (table[np.setdiff1d(np.arange(toy.n_obs), sampled)] == -1).all()
    assert (table[sampled] >= 0).all() and not (table[sampled] == sampled[:, None]).any()  # never the cell itself
    groups = toy.obs["cell_type"].to_numpy()
    same = groups[table[sampled]] == groups[sampled][:, None]
    assert same.mean() > 0.9  # three groups: neighbours in the PCs share the group (0.95 here; chance is 1/3)

    # every pre-training minibatch: a row's neighbour positives are exactly its table entries in the batch
    assert len(targets) > len(calls) > 0  # pre-training's minibatches come first; fine-tuning has no instance loss
    found = 0
    for ids, rows in zip(targets[: len(calls)], calls, strict=True):
        ids, rows = ids.cpu().numpy(), rows.cpu().numpy()
        where = {c: r for r, c in enumerate(ids)}
        for r, cell in enumerate(ids):
            expected = sorted(where[c] for c in table[cell] if c >= 0 and c in where)
            assert sorted(rows[r][rows[r] >= 0]) == expected
            found += len(expected)
    assert found > 0


def test_without_the_option_the_loss_gets_no_neighbours(toy, monkeypatch):
    calls = []
    real_loss = losses.info_nce
    monkeypatch.setattr(losses, "info_nce", lambda *a, **kw: calls.append(kw.get("neighbours")) or real_loss(*a, **kw))
    SCGPCL(toy, 3, random_state=0, **TINY).train(progress=False)
    assert calls and all(c is None for c in calls)


def test_ins_neighbours_is_refused_with_several_processes():
    assert multi_process_problem(TrainConfig()) is None
    problem = multi_process_problem(TrainConfig(ins_neighbours=10))
    assert problem.startswith("ins_neighbours=10 is not available with several processes") and "one process" in problem
