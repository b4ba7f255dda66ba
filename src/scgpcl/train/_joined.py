"""k-means on the representation joined with the input features' principal components (``kmeans_pca_weight``).

The learned representation and the principal components of the input features cluster well on different
datasets (``benchmarks/results/hybrid.md``). With ``kmeans_pca_weight`` w > 0 the k-means that starts
fine-tuning (and gives the labels without it) runs on both: each block centred and divided by the square
root of its total variance, the PCA block multiplied by w. The DEC centres are the clusters' means in the
representation. With ``dec_pca_target`` DEC's target distribution also comes from the joined space
(:class:`JoinedTarget`); the network's own assignment stays in the representation.
"""

from __future__ import annotations

import numpy as np
import torch

from ..module import soft_assign

__all__ = ["JOINED_PCS", "FeaturePCA", "JoinedTarget", "cluster_means", "joined_space", "start_kmeans"]

#: principal components of the features joined to the representation
JOINED_PCS = 50


class FeaturePCA:
    """Principal components of the z-scored input features, fitted on some cells and applied to any.

    Exact PCA from the genes x genes covariance, accumulated chunk by chunk: memory grows with the genes
    squared, not with cells x genes. Float64 accumulation; signs of the components are arbitrary (k-means
    and distances do not see them). ``reduce(total, gram, n)``, if given, turns this process's sums over its
    share of ``cells`` into the sums over all of them (several processes).
    """

    def __init__(self, loader, cells: torch.Tensor | None, *, chunk: int, n_pcs: int = JOINED_PCS, reduce=None):
        self.loader, self.chunk = loader, chunk
        g = loader.n_genes
        total, gram, n = torch.zeros(g, dtype=torch.float64), torch.zeros(g, g, dtype=torch.float64), 0
        for c in loader.chunks(cells, chunk):
            x = c.features.dense().to(torch.float64).cpu()
            total += x.sum(0)
            gram += x.T @ x
            n += len(x)
        if reduce is not None:  # several processes: each summed its share of the cells
            total, gram, n = reduce(total, gram, n)
        self.mean = total / n
        _, vecs = torch.linalg.eigh(gram / n - torch.outer(self.mean, self.mean))  # ascending eigenvalues
        self.basis = vecs[:, -min(n_pcs, g, max(n - 1, 1)) :].flip(1)

    def transform(self, cells: torch.Tensor | None) -> np.ndarray:
        """The component scores of ``cells`` (None: every cell), float64."""
        out = [(c.features.dense().to(torch.float64).cpu() - self.mean) @ self.basis
               for c in self.loader.chunks(cells, self.chunk)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.basis.shape[1]))  # no cells: a rank's empty share


class JoinedTarget:
    """DEC's soft assignment in the joined space, for the target distribution (``dec_pca_target``).

    The PCA block is fixed at the start of fine-tuning: the sample's component scores and each cluster's
    mean score, scaled as in :func:`joined_space` and then to the representation's scale at the start, so
    that the representation's distances keep DEC's usual kernel width. Only the target uses it; the
    network's own soft assignment (what the loss trains and what the labels come from) stays in the
    representation.
    """

    def __init__(self, pca: FeaturePCA, sample_pcs: np.ndarray, z_s: torch.Tensor, labels: np.ndarray, k: int,
                 weight: float):
        self.pca = pca
        self.p_mean = sample_pcs.mean(0)
        p_scale = _total_sd(sample_pcs)
        self.factor = weight * _total_sd(z_s.detach().cpu().numpy()) / p_scale if p_scale > 0 else 0.0
        device = z_s.device
        self.sample = torch.from_numpy(self._scaled(sample_pcs)).to(device)
        self.centres = torch.from_numpy(cluster_means(self.sample, labels, k)).to(device)

    def _scaled(self, pcs: np.ndarray) -> np.ndarray:
        return ((pcs - self.p_mean) * self.factor).astype(np.float32)

    def rows(self, cells: torch.Tensor) -> torch.Tensor:
        """The scaled PCA block of ``cells`` outside the sample."""
        return torch.from_numpy(self._scaled(self.pca.transform(cells))).to(cells.device)

    def soft_assign(self, z: torch.Tensor, p: torch.Tensor, mu: torch.Tensor, alpha: float) -> torch.Tensor:
        """Student-t soft assignment of ``[z, p]`` to ``[mu, the clusters' PCA centres]``."""
        return soft_assign(torch.cat([z, p], 1), torch.cat([mu, self.centres], 1), alpha)


def _total_sd(x: np.ndarray) -> float:
    """Square root of the total variance of the rows of ``x`` (the mean squared distance to their mean)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))


def _block(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    scale = _total_sd(x)
    x = x - x.mean(0)
    return x / scale if scale > 0 else x


def joined_space(z: torch.Tensor, pcs: np.ndarray, weight: float) -> np.ndarray:
    """``[z, weight * pcs]``, each block centred and scaled to unit total variance (float32)."""
    return np.hstack([_block(z.detach().cpu().numpy()), weight * _block(pcs)]).astype(np.float32)


def cluster_means(z: torch.Tensor | np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Each cluster's mean row (k x d, float32); every label 0..k-1 must occur."""
    zn = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
    return np.stack([zn[labels == c].mean(0) for c in range(k)]).astype(np.float32)


def start_kmeans(tr, z_s: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The k-means that starts fine-tuning (or gives the labels without it) on the sample's representation.

    Returns the labels and the centres in the representation. With ``kmeans_pca_weight`` 0 this is k-means
    on ``z_s`` alone; otherwise on :func:`joined_space` of ``z_s`` and the sample's feature PCs
    (``tr.sample_feature_pcs()``: one process computes them, several share the work).
    """
    cfg = tr.cfg
    if cfg.kmeans_pca_weight <= 0:
        r = tr.kmeans(z_s, tr.k, cfg.kmeans_n_init, select=cfg.kmeans_select)
        return r.labels, r.centres
    pca, pcs = tr.sample_feature_pcs()
    r = tr.kmeans(joined_space(z_s, pcs, cfg.kmeans_pca_weight), tr.k, cfg.kmeans_n_init, select=cfg.kmeans_select)
    if cfg.dec_pca_target:
        tr.joined_target = JoinedTarget(pca, pcs, z_s, r.labels, tr.k, cfg.kmeans_pca_weight)
    return r.labels, cluster_means(z_s, r.labels, tr.k)
