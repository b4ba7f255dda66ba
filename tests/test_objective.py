"""The objective: named loss terms, the public extension point, and what the training loop logs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scgpcl
from scgpcl.module import LOSS_TERMS, LossContext, register_loss_term

from helpers import QUICK


@pytest.fixture
def spread_term():
    """A toy term added through the public extension point only; removed afterwards."""
    calls = []

    def spread(fwd, ctx):
        calls.append(ctx.stage)
        z = fwd.z(0)
        return -z.var(dim=0).mean()

    register_loss_term("spread", spread, stages=("pretrain",))
    try:
        yield calls
    finally:
        LOSS_TERMS.pop("spread", None)


def test_a_new_loss_term_is_trained_and_logged_without_touching_the_trainer(toy, spread_term):
    scgpcl.tl.cluster(toy, n_clusters=3, random_state=0, progress=False, loss_weights={"spread": 0.1}, **QUICK)
    history = toy.uns["scgpcl"]["history"]
    assert "spread" in history["pretrain"] and "spread" not in history["finetune"]
    values = np.asarray(history["pretrain"]["spread"])
    assert len(values) == toy.uns["scgpcl"]["stages"]["pretrain"]["rounds"] and np.all(values < 0)
    assert set(spread_term) == {"pretrain"}
    # the total the optimiser saw includes it with its weight (the instance loss is scaled on these few cells)
    h = history["pretrain"]
    train = scgpcl.recommended().train
    w_ins = min(1.0, toy.n_obs / train.lambda_ins_cells) ** train.lambda_ins_power
    parts = h["zinb"] + w_ins * h["ins"] + 0.1 * h["spread"] + 0.05 * np.nan_to_num(h["proto"])
    np.testing.assert_allclose(h["loss"], parts, rtol=1e-4)


def test_a_zero_weight_skips_the_term_and_an_unknown_name_is_refused(toy, spread_term):
    scgpcl.tl.cluster(toy, n_clusters=3, random_state=0, progress=False, loss_weights={"spread": 0.0}, **QUICK)
    assert "spread" not in toy.uns["scgpcl"]["history"]["pretrain"] and spread_term == []
    with pytest.raises(scgpcl.InputError, match="unknown loss term"):
        scgpcl.SCGPCL(toy, 3, loss_weights={"sprad": 1.0})
    # a built-in term with an option of its own: the weight was ignored without a word ({'ins': 0} trained ins)
    with pytest.raises(scgpcl.InputError, match=r"loss_weights cannot weigh 'ins' \(set lambda_ins= instead\)"):
        scgpcl.SCGPCL(toy, 3, loss_weights={"ins": 0.0})
    with pytest.raises(scgpcl.InputError, match=r"loss_weights=\{'zinb': -5\} \(a mapping of names to numbers >= 0\)"):
        scgpcl.SCGPCL(toy, 3, loss_weights={"zinb": -5})
    with pytest.raises(ValueError, match="unknown stage"):
        register_loss_term("x", lambda f, c: None, stages=("warmup",))



def test_a_stage_left_with_no_loss_is_refused_before_training(toy):
    # every pre-training term at 0: total was the int 0 and the first step died in total.backward()
    with pytest.raises(scgpcl.InputError, match=r"pre-training would have no loss .*loss_weights\['zinb'\]=0, "
                                                r"lambda_ins=0; give one of them a weight above 0"):
        scgpcl.SCGPCL(toy, 3, lambda_ins=0, loss_weights={"zinb": 0.0})
    # the prototypical loss alone cannot train the warm-up rounds, which have no prototypes
    with pytest.raises(scgpcl.InputError, match="pre-training would have no loss"):
        scgpcl.SCGPCL(toy, 3, lambda_ins=0, lambda_proto=1.0, loss_weights={"zinb": 0.0})
    # fine-tuning: found before pre-training spends its time, and skipping it is offered
    with pytest.raises(scgpcl.InputError, match=r"fine-tuning would have no loss .*lambda_cluster=0; .*finetune=False"):
        scgpcl.SCGPCL(toy, 3, lambda_cluster=0, loss_weights={"zinb": 0.0})
    # each is accepted when something is left: the other reconstruction, no fine-tuning
    scgpcl.SCGPCL(toy, 3, lambda_ins=0, lambda_cluster=0, loss_weights={"zinb": 0.0}, reconstruction="mse")
    scgpcl.SCGPCL(toy, 3, lambda_cluster=0, loss_weights={"zinb": 0.0}, finetune_rounds=0)
    scgpcl.SCGPCL(toy, 3, lambda_cluster=0, loss_weights={"zinb": 0.0}, finetune=False)  # was refused for a day
    # and a minibatch on which no term applies (a term of the user's returned None) says so
    with pytest.raises(RuntimeError, match="no loss term applies to this minibatch"):
        _ = scgpcl.module.LossOutput({}, {}).total


def test_a_term_of_the_users_is_enough_for_a_stage(toy, spread_term):
    scgpcl.SCGPCL(toy, 3, lambda_ins=0, loss_weights={"zinb": 0.0, "spread": 0.1}, finetune_rounds=0)
    with pytest.raises(scgpcl.InputError, match=r"lambda_ins=0, loss_weights\['spread'\]=0"):
        scgpcl.SCGPCL(toy, 3, lambda_ins=0, loss_weights={"zinb": 0.0, "spread": 0.0}, finetune_rounds=0)

def test_built_in_terms_follow_their_config_weights(toy):
    m = scgpcl.SCGPCL(toy, 3, random_state=0, lambda_ins=0.0, **QUICK)
    assert m.trainer.weights["ins"] == 0.0 and m.trainer.weights["zinb"] == 1.0
    batch = next(m.loader.batches(m.loader.plan(1)))
    out = m.module.loss(batch, LossContext("pretrain"), m.trainer.weights)
    assert set(out.terms) == {"zinb"}  # ins weighs 0, proto has no prototypes yet, mse is not this model's
    torch.testing.assert_close(out.total, out.terms["zinb"])


def test_the_instance_loss_is_scaled_down_on_data_with_fewer_cells_than_lambda_ins_cells(toy):
    n = toy.n_obs
    # the default power is 4: half the threshold's cells weighs a sixteenth
    scaled = scgpcl.SCGPCL(toy, 3, random_state=0, lambda_ins=0.5, lambda_ins_cells=2 * n, **QUICK)
    assert scaled.trainer.weights["ins"] == pytest.approx(0.5 / 16)
    assert scaled.trainer.weights["zinb"] == 1.0 and scaled.trainer.weights["proto"] == 0.05
    linear = scgpcl.SCGPCL(toy, 3, random_state=0, lambda_ins=0.5, lambda_ins_cells=4 * n, lambda_ins_power=1.0,
                           **QUICK)
    assert linear.trainer.weights["ins"] == pytest.approx(0.5 / 4)
    # at or above the threshold, and with the option off, the weight is lambda_ins itself (never scaled up)
    for cells in (n // 2, n, 0):
        m = scgpcl.SCGPCL(toy, 3, random_state=0, lambda_ins=0.5, lambda_ins_cells=cells, **QUICK)
        assert m.trainer.weights["ins"] == 0.5
    # the cells counted are those trained on: empty cells are dropped first
    a = toy.copy()
    keep = np.ones(n, dtype=np.float32)
    keep[:n // 2] = 0.0
    a.X = sp.csr_matrix(sp.diags(keep) @ a.X)
    dropped = scgpcl.SCGPCL(a, 3, random_state=0, lambda_ins=0.5, lambda_ins_cells=n, **QUICK)
    assert dropped.trainer.weights["ins"] == pytest.approx(0.5 * ((n - n // 2) / n) ** 4)
    # the scaled weight is the one training uses: the logged total is built with it
    scaled.train(progress=False)
    h = scaled.history["pretrain"]
    parts = np.asarray(h["zinb"]) + 0.5 / 16 * np.asarray(h["ins"]) + 0.05 * np.nan_to_num(h["proto"])
    np.testing.assert_allclose(h["loss"], parts, rtol=1e-4)


def test_the_cluster_term_is_kl_of_each_batch_cells_own_target_against_its_soft_assignment():
    # no test looked at the DEC term where training calls it: KL(Q || P) instead of KL(P || Q), or the first rows
    # of the target instead of the batch cells' own rows, both passed every test (an end-to-end ARI on toy data
    # is already reached by the k-means start). Hand example: 3 batch cells of a 4-cell target, in order 3, 0, 2.
    from types import SimpleNamespace

    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    q = np.array([[10 / 11, 1 / 11], [5 / 7, 2 / 7], [2 / 7, 5 / 7]])  # Student-t, alpha 1, by hand
    target = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4]])
    fwd = SimpleNamespace(z=lambda view: z, module=SimpleNamespace(cluster_centres=centres),
                          batch=SimpleNamespace(targets=torch.tensor([3, 0, 2])))
    ctx = LossContext("finetune", alpha=1.0, target=torch.tensor(target, dtype=torch.float64))
    p_batch = target[[3, 0, 2]]
    expected = np.mean((p_batch * np.log(p_batch / q)).sum(axis=1))  # 0.155226
    assert float(LOSS_TERMS["cluster"].fn(fwd, ctx)) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.155226, abs=1e-6)


def test_the_reconstruction_term_is_the_mean_over_the_views(monkeypatch):
    # a sum instead of the mean weighs the reconstruction twice against the contrastive terms in pre-training
    # (two views) and passed every test
    from types import SimpleNamespace

    from scgpcl.module import _objective

    monkeypatch.setitem(_objective.RECONSTRUCTIONS, "zinb", SimpleNamespace(loss=lambda decoded, batch: decoded))
    losses = {0: torch.tensor(3.0), 1: torch.tensor(5.0)}
    fwd = SimpleNamespace(module=SimpleNamespace(reconstruction="zinb"), n_views=2, decoded=losses.__getitem__,
                          batch=None)
    assert float(LOSS_TERMS["zinb"].fn(fwd, LossContext("pretrain"))) == pytest.approx(4.0)
    fwd.n_views = 1  # fine-tuning: one view
    assert float(LOSS_TERMS["zinb"].fn(fwd, LossContext("finetune"))) == pytest.approx(3.0)
