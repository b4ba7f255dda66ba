"""Loss functions of scGPCL (docs/method.md section 5) against independent references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.special as ssp
import scipy.stats as st
import torch

from scgpcl.module._losses import (
    dec_kl,
    info_nce,
    nb_log_prob,
    proto_nce,
    soft_assign,
    target_distribution,
    zinb_log_prob,
    zinb_nll,
    zinb_nll_sparse,
)
from scgpcl.train._trainer import prototype_sizes

F64 = torch.float64

XS = [0, 1, 2, 7, 50, 1000, 100_000]
MUS = [1e-5, 1e-2, 1.0, 30.0, 1e3, 1e6]
THETAS = [1e-4, 1e-2, 1.0, 10.0, 1e3, 1e4]


def _grid():
    x, mu, th = (np.array(a, dtype=np.float64) for a in zip(*itertools.product(XS, MUS, THETAS), strict=True))
    return x, mu, th


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=F64)


# ----------------------------------------------------------------------------- NB / ZINB


def test_nb_log_prob_matches_scipy_nbinom():
    x, mu, th = _grid()
    ref = st.nbinom.logpmf(x, th, th / (th + mu))
    got = nb_log_prob(_t(x), _t(mu), _t(th)).numpy()
    assert np.all(np.isfinite(got))
    # scipy evaluates x*log1p(-p) with p = theta/(theta+mu); 1-p cancels when
    # mu << theta (mu=1e-5, theta=1e4 gives ~2e-9 relative error in scipy itself),
    # so 1e-7 is scipy's accuracy here, not ours (see the mpmath test below).
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9)


def test_nb_log_prob_matches_high_precision_reference():
    mpmath = pytest.importorskip("mpmath", reason="mpmath gives the exact NB reference")
    mpmath.mp.dps = 50
    pts = [
        (0, 1e-5, 1e4),
        (1, 1e-5, 1e4),
        (7, 1e-5, 1e4),
        (0, 1e6, 1e-4),
        (3, 1e6, 1e-4),
        (100_000, 1e6, 1e4),
        (1000, 1e-5, 1e-4),
        (0, 1e-5, 1e-4),
    ]
    for x, mu, th in pts:
        x_, mu_, th_ = (mpmath.mpf(v) for v in (x, mu, th))
        ref = (
            mpmath.loggamma(x_ + th_)
            - mpmath.loggamma(th_)
            - mpmath.loggamma(x_ + 1)
            + th_ * mpmath.log(th_ / (th_ + mu_))
            + x_ * mpmath.log(mu_ / (th_ + mu_))
        )
        got = float(nb_log_prob(_t(x), _t(mu), _t(th)))
        assert got == pytest.approx(float(ref), rel=1e-11, abs=1e-12), (x, mu, th)


def _zinb_brute(x, mu, th, logit):
    """log(pi*1[x=0] + (1-pi)*NB(x)), pi = sigmoid(logit), float64, term by term.

    The sum and product are taken in log space (logaddexp / adding logs) only so
    that (1-pi)*NB(x) ~ 1e-13 * 1e-300 does not underflow.
    """
    log_pi = np.log(ssp.expit(logit))
    log_1m_pi = np.log(ssp.expit(-logit))  # = log(1 - pi) without cancellation at logit=+30
    log_nb = st.nbinom.logpmf(x, th, th / (th + mu))
    zero = np.logaddexp(log_pi, log_1m_pi + log_nb)
    return np.where(x == 0, zero, log_1m_pi + log_nb)


def test_zinb_log_prob_matches_brute_force_mixture():
    logits = [-30.0, -5.0, 0.0, 2.0, 30.0]
    x, mu, th, lg = (
        np.array(a, dtype=np.float64) for a in zip(*itertools.product(XS, MUS, THETAS, logits), strict=True)
    )
    ref = _zinb_brute(x, mu, th, lg)
    got = zinb_log_prob(_t(x), _t(mu), _t(th), _t(lg)).numpy()
    assert np.all(np.isfinite(ref)) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9)


def test_zinb_zero_branch_extreme_logits_exact():
    # x = 0, logit = +30: pi ~ 1 - 9.4e-14, the likelihood is ~1 whatever NB(0) is.
    mu, th = _t([1e6]), _t([1e-4])
    nb0 = float(-th * torch.log1p(mu / th))
    for lg in (30.0, -30.0, 0.0):
        got = float(zinb_log_prob(_t([0.0]), mu, th, _t([lg])))
        ref = math.log(ssp.expit(lg) + ssp.expit(-lg) * math.exp(nb0))
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-15)


def _random_batch(seed=0, n=7, g=9, density=0.4):
    rng = np.random.default_rng(seed)
    x = rng.poisson(4.0, size=(n, g)).astype(np.float64)
    x[rng.random((n, g)) > density] = 0.0
    x[0, :] = 0.0  # an all-zero cell
    x[:, 1] = 0.0  # an all-zero gene
    mean = rng.uniform(0.05, 5.0, size=(n, g))
    theta = rng.uniform(0.1, 20.0, size=(n, g))
    logits = rng.normal(0.0, 2.0, size=(n, g))
    sf = rng.uniform(0.5, 2.0, size=n)
    return x, mean, theta, logits, sf


def _sparse_args(x):
    flat = torch.as_tensor(x.reshape(-1))
    nz_index = torch.nonzero(flat, as_tuple=False).reshape(-1)
    nz_counts = flat[nz_index]
    lgamma_const = torch.lgamma(flat + 1.0).sum()
    return nz_index, nz_counts, lgamma_const


def test_zinb_nll_dense_matches_sparse_value_and_gradients():
    x, mean, theta, logits, sf = _random_batch()
    assert 0 < np.count_nonzero(x) < x.size

    def leaves():
        return [torch.tensor(a, dtype=F64, requires_grad=True) for a in (mean, theta, logits)]

    m1, t1, l1 = leaves()
    dense = zinb_nll(_t(x), m1, t1, l1, _t(sf))
    dense.backward()

    m2, t2, l2 = leaves()
    sparse = zinb_nll_sparse(*_sparse_args(x), m2, t2, l2, _t(sf))
    sparse.backward()

    # independent value: the brute-force mixture, averaged over all entries
    ref = -_zinb_brute(x.ravel(), (mean * sf[:, None]).ravel(), theta.ravel(), logits.ravel()).mean()
    assert float(dense.detach()) == pytest.approx(ref, rel=1e-9)
    assert float(sparse.detach()) == pytest.approx(float(dense.detach()), rel=1e-10)
    for a, b in ((m1, m2), (t1, t2), (l1, l2)):
        assert torch.all(a.grad != 0)  # every entry influences the loss
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-14)


def test_zinb_nll_size_factor_scales_mean():
    x, mean, theta, logits, sf = _random_batch(seed=3)
    a = zinb_nll(_t(x), _t(mean), _t(theta), _t(logits), _t(sf))
    b = zinb_nll(_t(x), _t(mean * sf[:, None]), _t(theta), _t(logits), _t(np.ones_like(sf)))
    assert float(a) == pytest.approx(float(b), rel=1e-12)


@pytest.mark.parametrize("which", ["dense", "sparse"])
def test_zinb_nll_gradients_finite_at_extremes_float32(which):
    xs = [0.0, 1.0, 30.0]
    mus = [1e-5, 1.0, 1e6]
    ths = [1e-4, 1.0, 1e4]
    lgs = [-50.0, 0.0, 50.0]
    grid = np.array(list(itertools.product(xs, mus, ths, lgs)), dtype=np.float32)  # (81, 4)
    x = torch.tensor(grid[:, 0]).reshape(1, -1)
    mean = torch.tensor(grid[:, 1]).reshape(1, -1).requires_grad_()
    theta = torch.tensor(grid[:, 2]).reshape(1, -1).requires_grad_()
    logits = torch.tensor(grid[:, 3]).reshape(1, -1).requires_grad_()
    sf = torch.ones(1)
    if which == "dense":
        loss = zinb_nll(x, mean, theta, logits, sf)
    else:
        nz_index, nz_counts, lgamma_const = _sparse_args(grid[:, 0].reshape(1, -1).astype(np.float32))
        loss = zinb_nll_sparse(nz_index, nz_counts.float(), lgamma_const.float(), mean, theta, logits, sf)
    loss.backward()
    assert torch.isfinite(loss)
    for p in (mean, theta, logits):
        assert torch.isfinite(p.grad).all(), p.grad
    # and the float32 value is close to the float64 one
    loss64 = zinb_nll(x.double(), mean.double(), theta.double(), logits.double(), sf.double())
    assert float(loss.detach()) == pytest.approx(float(loss64.detach()), rel=1e-5)


# ----------------------------------------------------------------------------- contrastive


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _naive_info_nce(h, hp, tau):
    n = h.shape[0]

    def l(a, b, i):  # l_Ins(a_i, b_i): a is the anchor's view, b the other view
        num = math.exp(_cos(a[i], b[i]) / tau)
        den = sum(math.exp(_cos(a[i], a[j]) / tau) for j in range(n) if j != i)
        den += sum(math.exp(_cos(a[i], b[j]) / tau) for j in range(n))
        return math.log(num / den)

    return -sum(l(h, hp, i) + l(hp, h, i) for i in range(n)) / (2 * n)


@pytest.mark.parametrize("tau", [0.25, 1.0])
def test_info_nce_matches_slides_formula(tau):
    rng = np.random.default_rng(1)
    h = rng.normal(size=(5, 4))
    hp = h + 0.5 * rng.normal(size=(5, 4))
    hp[2] *= 7.0  # scale must not matter (cosine similarity)
    got = float(info_nce(_t(h), _t(hp), tau))
    assert got == pytest.approx(_naive_info_nce(h, hp, tau), rel=1e-12)


def test_info_nce_is_symmetric_in_views_and_decreases_with_agreement():
    rng = np.random.default_rng(2)
    h = rng.normal(size=(6, 3))
    hp = rng.normal(size=(6, 3))
    a = float(info_nce(_t(h), _t(hp), 0.25))
    b = float(info_nce(_t(hp), _t(h), 0.25))
    assert a == pytest.approx(b, rel=1e-12)
    same = float(info_nce(_t(h), _t(h), 0.25))
    assert same < a


def _naive_proto_nce(h, prototypes, assignments, tau):
    n, T = h.shape[0], len(prototypes)
    total = 0.0
    for i in range(n):
        l_pro = 0.0
        for Z, s in zip(prototypes, assignments, strict=True):
            den = sum(math.exp(_cos(h[i], Z[j]) / tau) for j in range(Z.shape[0]))
            for k in range(Z.shape[0]):
                if s[i] == k:  # indicator 1(h_i in z_k^t)
                    l_pro += math.log(math.exp(_cos(h[i], Z[k]) / tau) / den)
        total += l_pro / T
    return -total / n


def test_proto_nce_matches_slides_formula_three_granularities():
    rng = np.random.default_rng(3)
    n, d = 7, 5
    h = rng.normal(size=(n, d))
    sizes = prototype_sizes(3)  # [3, 4, 6]
    assert len(sizes) == 3
    protos = [rng.normal(size=(k, d)) * rng.uniform(0.5, 3.0) for k in sizes]
    assign = [rng.integers(0, k, size=n) for k in sizes]
    tau = 0.25
    got = float(
        proto_nce(_t(h), [_t(z) for z in protos], [torch.as_tensor(a, dtype=torch.long) for a in assign], tau)
    )
    assert got == pytest.approx(_naive_proto_nce(h, protos, assign, tau), rel=1e-12)


# ----------------------------------------------------------------------------- DEC


# Hand example: three cells on a line at 0, 1, 2; centres at 0 and 3; alpha = 1,
# so q_ik ∝ 1 / (1 + d_ik^2).
#   cell 0: d^2 = (0, 9) -> (1, 1/10)  -> q = (10/11, 1/11)
#   cell 1: d^2 = (1, 4) -> (1/2, 1/5) -> q = (5/7, 2/7)
#   cell 2: d^2 = (4, 1) -> (1/5, 1/2) -> q = (2/7, 5/7)
# f = column sums = (10/11 + 1, 1/11 + 1) = (21/11, 12/11)
# p_ik ∝ q_ik^2 / f_k:
#   cell 0: (100/231, 1/132)  -> p = (400/407, 7/407)
#   cell 1: (275/1029, 11/147) -> p = (25/32, 7/32)
#   cell 2: (44/1029, 275/588) -> p = (16/191, 175/191)
Z_HAND = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]
MU_HAND = [[0.0, 0.0], [3.0, 0.0]]
Q_HAND = [[10 / 11, 1 / 11], [5 / 7, 2 / 7], [2 / 7, 5 / 7]]
P_HAND = [[400 / 407, 7 / 407], [25 / 32, 7 / 32], [16 / 191, 175 / 191]]


def test_soft_assign_hand_example():
    q = soft_assign(_t(Z_HAND), _t(MU_HAND), alpha=1.0)
    torch.testing.assert_close(q, _t(Q_HAND), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(q.sum(1), torch.ones(3, dtype=F64), rtol=0, atol=1e-14)


def test_target_distribution_hand_example():
    p = target_distribution(_t(Q_HAND))
    torch.testing.assert_close(p, _t(P_HAND), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(p.sum(1), torch.ones(3, dtype=F64), rtol=0, atol=1e-14)


def test_soft_assign_general_alpha_matches_formula():
    rng = np.random.default_rng(4)
    z, mu, alpha = rng.normal(size=(6, 3)), rng.normal(size=(4, 3)), 2.5
    d2 = ((z[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    q = (1 + d2 / alpha) ** (-(alpha + 1) / 2)
    q /= q.sum(1, keepdims=True)
    torch.testing.assert_close(soft_assign(_t(z), _t(mu), alpha=alpha), _t(q), rtol=1e-10, atol=1e-12)


def test_dec_kl_matches_scipy_entropy():
    rng = np.random.default_rng(5)
    q = rng.dirichlet(np.ones(4), size=6)
    p = rng.dirichlet(np.ones(4) * 0.5, size=6)
    ref = np.mean([st.entropy(p[i], q[i]) for i in range(6)])
    assert float(dec_kl(_t(p), _t(q))) == pytest.approx(ref, rel=1e-9)
    assert float(dec_kl(_t(q), _t(q))) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- granularities


@pytest.mark.parametrize(
    "k, expected",
    [
        # K_1 = K; K_2 = max(K+1, 1.5K) with 1.5K rounded DOWN for odd K (the
        # authors' code does int(max(K_1 + 1, 1.5 * K)), i.e. floor); K_3 =
        # max(K_2 + 1, ceil(2K)).
        (1, [1, 2, 3]),
        (2, [2, 3, 4]),
        (3, [3, 4, 6]),  # 1.5*3 = 4.5 -> 4 (= K+1 anyway)
        (5, [5, 7, 10]),  # 1.5*5 = 7.5 -> 7
        (7, [7, 10, 14]),  # 10.5 -> 10
        (8, [8, 12, 16]),
        (10, [10, 15, 20]),
    ],
)
def test_prototype_sizes(k, expected):
    sizes = prototype_sizes(k)
    assert sizes == expected
    assert all(isinstance(s, int) for s in sizes)
    assert sizes[0] < sizes[1] < sizes[2]


def test_prototype_sizes_capped_at_the_number_of_cells():
    assert prototype_sizes(8, 100) == [8, 12, 16]
    assert prototype_sizes(8, 13) == [8, 12, 13]
    assert prototype_sizes(8, 10) == [8, 10, 10]
