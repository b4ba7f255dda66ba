"""Loss functions of scGPCL (docs/method.md section 5), pure torch.

Every function takes tensors and returns a scalar (or per-element) tensor;
none of them knows about AnnData or the training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "nb_log_prob",
    "zinb_log_prob",
    "zinb_nll",
    "zinb_nll_sparse",
    "mse_loss",
    "info_nce",
    "proto_nce",
    "soft_assign",
    "target_distribution",
    "dec_kl",
]


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    r"""Elementwise log NB(x | mu, theta) in the mean/dispersion parametrisation.

    .. math::
        \log\Gamma(x+\theta) - \log\Gamma(\theta) - \log\Gamma(x+1)
        - \theta\,\log(1 + \mu/\theta) + x\,(\log\mu - \log(\theta+\mu))

    ``theta * log(theta / (theta + mu))`` is written as ``-theta * log1p(mu / theta)``
    so it stays exact when ``mu << theta``.

    Parameters
    ----------
    x
        Counts.
    mu
        NB means (> 0), broadcastable with ``x``.
    theta
        NB dispersions (inverse overdispersion, > 0), broadcastable with ``x``.
    """
    log_theta_mu = torch.log(theta + mu)
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
        - theta * torch.log1p(mu / theta)
        + x * (torch.log(mu) - log_theta_mu)
    )


def zinb_log_prob(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, pi_logits: torch.Tensor
) -> torch.Tensor:
    r"""Elementwise log ZINB(x | pi, mu, theta), dropout given as logits.

    With :math:`\pi = \sigma(l)` and :math:`a = -\theta\log(1+\mu/\theta)` (= log NB(0)):

    * x = 0: :math:`\log(\pi + (1-\pi)e^{a}) = \mathrm{softplus}(a - l) - \mathrm{softplus}(-l)`
    * x > 0: :math:`\log(1-\pi) + \log NB(x) = -\mathrm{softplus}(l) + \log NB(x)`

    Parameters
    ----------
    x
        Counts (an entry below 0.5 counts as zero).
    mu, theta
        NB mean and dispersion, as in :func:`nb_log_prob`.
    pi_logits
        Logits :math:`l` of the dropout probability :math:`\pi`.
    """
    log_nb0 = -theta * torch.log1p(mu / theta)
    zero_case = F.softplus(log_nb0 - pi_logits) - F.softplus(-pi_logits)
    nonzero_case = -F.softplus(pi_logits) + nb_log_prob(x, mu, theta)
    return torch.where(x < 0.5, zero_case, nonzero_case)


def zinb_nll(
    x: torch.Tensor,
    mean: torch.Tensor,
    theta: torch.Tensor,
    pi_logits: torch.Tensor,
    size_factors: torch.Tensor,
) -> torch.Tensor:
    """Mean ZINB negative log-likelihood over all entries of a batch.

    Parameters
    ----------
    x
        Counts, cells x genes.
    mean
        The decoder's normalised mean M; the NB mean is ``s_i * M_ij``.
    theta
        The decoder's dispersions.
    pi_logits
        The decoder's dropout logits.
    size_factors
        Size factor :math:`s_i` of each cell.
    """
    mu = mean * size_factors.reshape(-1, 1)
    return -zinb_log_prob(x, mu, theta, pi_logits).mean()


def zinb_nll_sparse(
    nz_index: torch.Tensor,
    nz_counts: torch.Tensor,
    lgamma_const: torch.Tensor,
    mean: torch.Tensor,
    theta: torch.Tensor,
    pi_logits: torch.Tensor,
    size_factors: torch.Tensor,
) -> torch.Tensor:
    r""":func:`zinb_nll` for a sparse count batch, without densifying it.

    Every entry contributes the zero branch; the stored (non-zero) entries,
    given by their flat indices ``nz_index`` into the (n, G) batch and their
    values ``nz_counts``, then swap it for the non-zero branch. The costly
    ``lgamma`` terms are evaluated only there, and ``lgamma_const`` (the sum of
    ``lgamma(x + 1)`` over the batch, a constant) is added at the end, so the
    value equals the dense formula exactly.
    """
    mu = mean * size_factors.reshape(-1, 1)
    log1p_mu_theta = torch.log1p(mu / theta)
    log_nb0 = -theta * log1p_mu_theta
    zero_case = F.softplus(log_nb0 - pi_logits) - F.softplus(-pi_logits)
    flat = lambda t: t.reshape(-1).index_select(0, nz_index)
    x = nz_counts
    mu_nz, th_nz, l_nz = flat(mu), flat(theta), flat(pi_logits)
    nonzero_case = (
        -F.softplus(l_nz)
        + torch.lgamma(x + th_nz)
        - torch.lgamma(th_nz)
        - th_nz * flat(log1p_mu_theta)
        + x * (torch.log(mu_nz) - torch.log(th_nz + mu_nz))
    )
    total = zero_case.sum() + (nonzero_case - flat(zero_case)).sum() - lgamma_const
    return -total / zero_case.numel()


def mse_loss(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Mean squared error: the ``reconstruction='mse'`` variant."""
    return F.mse_loss(prediction, target)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, tau: float, gather=None) -> torch.Tensor:
    r"""Instance-wise contrastive loss over two views (slides, :math:`L_{Ins}`).

    Anchors are the 2 N_b L2-normalised representations. For anchor ``i`` the
    positive is the same cell in the other view; the denominator runs over every
    other representation of both views (the anchor itself excluded). Returns the
    mean over the 2 N_b anchors of ``-log softmax(positive)``.

    ``gather`` (data-parallel training, :meth:`~scgpcl.distributed.Communicator.gather_with_grad`)
    maps this process's rows to every process's rows and the offset of its own:
    the anchors are then this process's cells and the denominator runs over the
    cells of the whole global minibatch, as with one process.

    Parameters
    ----------
    z1, z2
        Representations of the same N_b cells in the two views (same row order).
    tau
        Temperature.
    gather
        ``None`` with one process; else as above.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    keys, offset = (z, 0) if gather is None else gather(z)
    logits = z @ keys.T / tau
    self_mask = torch.zeros(2 * n, len(keys), dtype=torch.bool, device=z.device)
    self_mask[:, offset : offset + 2 * n] = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device) + offset
    return F.cross_entropy(logits, positive)


def proto_nce(
    z: torch.Tensor,
    prototypes: list[torch.Tensor],
    assignments: list[torch.Tensor],
    tau: float,
) -> torch.Tensor:
    r"""Multi-granularity prototypical contrastive loss (slides, :math:`L_{Pro}`).

    For each granularity t with prototypes :math:`Z^t` (K_t x d) and each cell
    with assigned prototype :math:`s`:
    :math:`-\log \frac{e^{\cos(h, z_s)/\tau}}{\sum_j e^{\cos(h, z_j)/\tau}}`,
    averaged over cells and granularities.

    Parameters
    ----------
    z
        Representations of the cells (N x d).
    prototypes
        Per granularity, the prototypes :math:`Z^t` (K_t x d).
    assignments
        Per granularity, the prototype index of each cell (N, int64), in the order of ``prototypes``.
    tau
        Temperature.
    """
    h = F.normalize(z, dim=1)
    total = z.new_zeros(())
    for centres, labels in zip(prototypes, assignments, strict=False):
        logits = h @ F.normalize(centres, dim=1).T / tau
        total = total + F.cross_entropy(logits, labels)
    return total / len(prototypes)


def soft_assign(z: torch.Tensor, mu: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    r"""DEC soft assignment with a Student-t kernel.

    :math:`q_{ik} \propto (1 + \lVert z_i - \mu_k\rVert^2/\alpha)^{-(\alpha+1)/2}`, each row summing to 1.

    Parameters
    ----------
    z
        Representations of the cells (N x d).
    mu
        Cluster centres (K x d).
    alpha
        Degrees of freedom of the Student-t kernel.
    """
    d2 = torch.cdist(z, mu).pow(2)
    q = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    r"""DEC target :math:`p_{ik} = (q_{ik}^2/f_k) / \sum_j (q_{ij}^2/f_j)`, :math:`f_k = \sum_i q_{ik}`."""
    p = q.pow(2) / q.sum(dim=0, keepdim=True)
    return p / p.sum(dim=1, keepdim=True)


def dec_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL(P || Q), summed over clusters and averaged over cells.

    Parameters
    ----------
    p
        Target distribution (N x K), e.g. :func:`target_distribution`.
    q
        Soft assignment (N x K), e.g. :func:`soft_assign`.
    eps
        Added inside both logarithms, so zero probabilities stay finite.
    """
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(dim=1).mean()
