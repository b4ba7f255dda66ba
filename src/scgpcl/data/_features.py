"""The cell node features, kept sparse (docs/method.md section 1, step 5)."""

from __future__ import annotations

import torch

from ._sparse import SparseBlock, spmm

__all__ = ["CellFeatures"]


class CellFeatures:
    r"""z-scored cell features :math:`X = (S - \mathbf{1}m^T)\,\mathrm{diag}(1/\sigma)` of some cells, kept sparse.

    ``S`` is the sparse log-normalised matrix of those cells (rows x G). A
    projection :math:`X\,\mathrm{diag}(c)\,W^T` (``c`` a 0/1 column mask) is
    computed as :math:`S\,W_c - \mathbf{1}(m^T W_c)` with
    :math:`W_c = \mathrm{diag}(c/\sigma) W^T`: a sparse-dense product instead of
    a dense one (~10x fewer operations on typical 90 %-zero data), exactly equal.

    Parameters
    ----------
    s
        The log-normalised values of the rows, as a :class:`SparseBlock`.
    mean, std
        Per-gene mean and standard deviation (1 where it is 0) of the log-normalised values.
    col_mask
        Optional 0/1 column mask (feature masking).
    """

    def __init__(self, s: SparseBlock, mean: torch.Tensor, std: torch.Tensor, col_mask: torch.Tensor | None = None):
        self.s = s
        self.mean = mean
        self.inv_std = 1.0 / std
        self.col_mask = col_mask

    def masked(self, col_mask: torch.Tensor | None) -> CellFeatures:
        """The same features with the column mask ``col_mask``."""
        out = CellFeatures.__new__(CellFeatures)
        out.s, out.mean, out.inv_std, out.col_mask = self.s, self.mean, self.inv_std, col_mask
        return out

    @property
    def shape(self) -> tuple[int, int]:
        """``(cells, genes)`` of the feature matrix."""
        return self.s.shape

    def dense(self) -> torch.Tensor:
        """The masked feature matrix, dense (for tests and small inputs)."""
        x = (self.s.to_dense() - self.mean) * self.inv_std
        return x if self.col_mask is None else x * self.col_mask

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """``X_masked @ weight.T`` for a Linear weight (out x G)."""
        scale = self.inv_std if self.col_mask is None else self.inv_std * self.col_mask
        w = weight.T * scale.unsqueeze(1)
        return spmm(self.s, w) - (self.mean @ w).unsqueeze(0)
