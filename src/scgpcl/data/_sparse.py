"""Sparse building blocks shared by the data layer and the network.

Everything here works on torch tensors on any device, so the per-step work
(gathering rows of the stored matrices, building a sampled subgraph, the
sparse products) runs where the model runs: on the GPU when there is one,
with no copy of the graph through the host.

- :func:`gather_rows`: the stored entries of some rows of a CSR matrix.
- :class:`SparseBlock`: a small CSR matrix with its transpose, ready for
  products in both directions (dense when that is faster).
- :func:`spmm`: ``A @ x`` for a constant ``A`` whose backward uses the
  precomputed ``A^T`` (torch's native CSR autograd is several times slower).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["DENSE_ABOVE", "DENSE_MAX_ENTRIES", "Pattern", "SparseBlock", "gather_rows", "spmm", "transpose_order"]

#: A block denser than this is multiplied as a dense matrix (``benchmarks/results/micro.md``).
DENSE_ABOVE = 0.15
#: ... unless it has more entries than this (128 MB as float32).
DENSE_MAX_ENTRIES = 2**25


def gather_rows(crow: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the stored entries of ``rows`` sit in a CSR matrix with row pointer ``crow``.

    Parameters
    ----------
    crow
        Row pointer (int64) of the full CSR matrix.
    rows
        Row ids to gather, in the order wanted (repeats allowed).

    Returns
    -------
    tuple of torch.Tensor
        ``(local_crow, positions)``: the row pointer of the sub-matrix made of
        those rows (in that order) and, for each of its entries, the position in
        the full matrix's column-index and value arrays. Cost: O(entries of those
        rows).
    """
    rows = rows.to(torch.int64)
    start = crow[rows]
    counts = crow[rows + 1] - start
    local = torch.zeros(len(rows) + 1, dtype=torch.int64, device=crow.device)
    torch.cumsum(counts, 0, out=local[1:])
    total = int(local[-1])
    shift = torch.repeat_interleave(start - local[:-1], counts, output_size=total)
    return local, torch.arange(total, device=crow.device) + shift


def transpose_order(crow: torch.Tensor, col: torch.Tensor, n_cols: int, *,
                    use_scipy: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The transpose of a CSR pattern: ``(t_crow, order)``.

    ``order`` lists the entries column by column (rows ascending within a
    column), so ``values[order]`` are the transpose's values and
    ``row_of_entry[order]`` its column indices. On the CPU this is a counting
    sort through scipy (several times faster than torch's sort); elsewhere a
    stable torch sort on the device (``use_scipy`` forces either path).
    """
    nnz = col.numel()
    if use_scipy is None:
        use_scipy = col.device.type == "cpu" and nnz < 2**31
    if use_scipy:
        n_rows = crow.numel() - 1
        m = sp.csr_matrix(
            (np.arange(nnz, dtype=np.int64), col.numpy(), crow.numpy()), shape=(n_rows, n_cols)
        )
        mt = m.T.tocsr()  # counting sort, rows ascending within each column
        t_crow = torch.from_numpy(mt.indptr.astype(np.int64, copy=False))
        return t_crow, torch.from_numpy(mt.data)
    order = torch.sort(col.to(torch.int64), stable=True).indices
    counts = torch.bincount(col.to(torch.int64), minlength=n_cols)
    t_crow = torch.zeros(n_cols + 1, dtype=torch.int64, device=col.device)
    torch.cumsum(counts, 0, out=t_crow[1:])
    return t_crow, order


class Pattern:
    """A CSR sparsity pattern (int64 ``crow`` and ``col``), with its row ids and transpose computed once, on demand.

    Several matrices with one pattern (the graph and the features of a
    subgraph) share these.
    """

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, shape: tuple[int, int]):
        self.crow, self.col, self.shape = crow, col.to(torch.int64), (int(shape[0]), int(shape[1]))
        self._row: torch.Tensor | None = None
        self._t: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def nnz(self) -> int:
        return self.col.numel()

    @property
    def row(self) -> torch.Tensor:
        """The row of every entry."""
        if self._row is None:
            self._row = _row_ids(self.crow)
        return self._row

    def transpose(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(t_crow, order, t_col)``: the transpose's row pointer, the entries in its order, its column ids."""
        if self._t is None:
            t_crow, order = transpose_order(self.crow, self.col, self.shape[1])
            self._t = (t_crow, order, self.row[order])
        return self._t

    def row_sums(self, val: torch.Tensor | None) -> torch.Tensor:
        """Sum of each row's values (its number of entries when ``val`` is None)."""
        if val is None:
            return self.crow.diff().to(torch.float32)
        return torch.zeros(self.shape[0], device=self.col.device).index_add_(0, self.row, val)

    def col_sums(self, val: torch.Tensor | None) -> torch.Tensor:
        """Sum of each column's values (its number of entries when ``val`` is None)."""
        if val is None:
            return torch.bincount(self.col, minlength=self.shape[1]).to(torch.float32)
        return torch.zeros(self.shape[1], device=self.col.device).index_add_(0, self.col, val)


def _row_ids(crow: torch.Tensor) -> torch.Tensor:
    n = crow.numel() - 1
    return torch.repeat_interleave(torch.arange(n, device=crow.device), crow.diff(), output_size=int(crow[-1]))


def _csr(crow, col, val, shape) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, val, size=shape, check_invariants=False)


def _dense(crow, col, val, shape, row: torch.Tensor | None = None) -> torch.Tensor:
    out = torch.zeros(shape, dtype=val.dtype, device=val.device)
    row = _row_ids(crow) if row is None else row
    out.view(-1).index_put_((row * shape[1] + col,), val, accumulate=False)
    return out


@dataclass
class SparseBlock:
    """A constant matrix ``m`` (rows x cols) and its transpose, for :func:`spmm` in both directions.

    Stored as torch CSR matrices, or dense when the block is dense enough for
    a dense product to be faster (:data:`DENSE_ABOVE`).
    """

    m: torch.Tensor
    m_t: torch.Tensor | None

    @classmethod
    def from_csr(cls, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int],
                 order: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                 transpose: bool = True) -> SparseBlock:
        """From a CSR pattern (int64 ``crow``, ``col``) and float32 values.

        ``order`` is :func:`transpose_order` of the pattern, when the caller
        already has it (two blocks with one pattern share it). ``transpose=False``
        skips the transpose (a block only multiplied forwards, without gradient).
        """
        n_rows, n_cols = shape
        col = col.to(torch.int64)
        entries = n_rows * n_cols
        if entries and col.numel() > DENSE_ABOVE * entries and entries <= DENSE_MAX_ENTRIES:
            m = _dense(crow, col, val, shape)
            return cls(m, m.T)
        if not transpose:
            return cls(_csr(crow, col, val, shape), None)
        t_crow, perm = order if order is not None else transpose_order(crow, col, n_cols)
        t_col = _row_ids(crow)[perm]
        return cls(_csr(crow, col, val, shape), _csr(t_crow, t_col, val[perm], (n_cols, n_rows)))

    @classmethod
    def from_pattern(cls, p: Pattern, val: torch.Tensor | None = None, *, transpose: bool = True) -> SparseBlock:
        """A block with pattern ``p`` and values ``val`` (None: every entry 1, no gather needed)."""
        n_rows, n_cols = p.shape
        entries = n_rows * n_cols
        ones = val is None
        if ones:
            val = torch.ones(p.nnz, device=p.col.device)
        if entries and p.nnz > DENSE_ABOVE * entries and entries <= DENSE_MAX_ENTRIES:
            m = _dense(p.crow, p.col, val, p.shape, p.row)
            return cls(m, m.T)
        m = _csr(p.crow, p.col, val, p.shape)
        if not transpose:
            return cls(m, None)
        t_crow, order, t_col = p.transpose()
        return cls(m, _csr(t_crow, t_col, val if ones else val[order], (n_cols, n_rows)))

    @classmethod
    def from_scipy(cls, m: sp.spmatrix, device: torch.device | str = "cpu") -> SparseBlock:
        """From a scipy matrix (tests, small inputs)."""
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        return cls.from_csr(torch.from_numpy(m.indptr.astype(np.int64)).to(device),
                            torch.from_numpy(m.indices.astype(np.int64)).to(device),
                            torch.from_numpy(m.data).to(device), m.shape)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of ``m``."""
        return tuple(self.m.shape)

    def to_dense(self) -> torch.Tensor:
        """``m`` as a dense tensor (``m`` itself when it is stored dense)."""
        return self.m.to_dense() if self.m.layout != torch.strided else self.m


class _SpMM(torch.autograd.Function):
    """``A @ x`` for a constant (CSR or dense) ``A``; the backward uses the precomputed ``A^T``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.a_t @ grad.contiguous()


def spmm(block: SparseBlock, x: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
    """``block.m @ x`` (or ``block.m.T @ x``), differentiable in ``x`` only.

    Parameters
    ----------
    block
        The constant matrix, with its transpose (needed for the gradient).
    x
        Dense right-hand side, ``(block.shape[1], d)`` (``(block.shape[0], d)``
        with ``transpose=True``).
    transpose
        Multiply by ``block.m.T`` instead of ``block.m``.
    """
    if transpose:
        return _SpMM.apply(block.m_t, block.m, x)
    return _SpMM.apply(block.m, block.m_t, x)
