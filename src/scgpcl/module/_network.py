"""The scGPCL network (docs/method.md section 4), pure torch: no AnnData in here.

Encoders and reconstructions sit behind two small registries,
:data:`ENCODERS` and :data:`RECONSTRUCTIONS`; the objective (the named loss
terms of a batch) is in :mod:`scgpcl.module._objective`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import BipartiteAdjacency, CellChunk, CellFeatures, View

#: ``encoder_activation`` name -> module applied after BatchNorm in every encoder layer but the last
ACTIVATIONS = {"none": nn.Identity, "relu": nn.ReLU, "elu": nn.ELU}

__all__ = [
    "ACTIVATIONS", "ENCODERS", "BipartiteSAGELayer", "GraphEncoder", "MLPEncoder", "SCGPCLModule", "ZINBDecoder",
    "project",
]

_LOG_MEAN_MIN, _LOG_MEAN_MAX = math.log(1e-5), math.log(1e6)


def project(x, lin: nn.Linear) -> torch.Tensor:
    """Apply ``lin`` to dense features or to :class:`~scgpcl.data.CellFeatures` (kept sparse)."""
    if isinstance(x, CellFeatures):
        out = x.project(lin.weight)
        return out if lin.bias is None else out + lin.bias
    return lin(x)


class BipartiteSAGELayer(nn.Module):
    r"""One heterogeneous GraphSAGE-mean layer on the cell-gene graph.

    For each node type t with neighbours of the other type:

    .. math:: h_t' = W^{self}_t h_t + W^{nbr}_t \,\mathrm{mean}_{u\in N(t)} h_u + b_t

    followed by BatchNorm per node type. Neighbour features are projected
    before they are aggregated (``mean(x) W = mean(x W)``), which is exact and
    cheaper when the input is wider than the output.

    With ``update_genes=False`` (the last layer, whose gene output nothing
    reads) only cells are updated. ``activation`` (default ``nn.Identity``, the
    reference's linear layer) follows the BatchNorm of both node types.
    """

    def __init__(self, cell_in: int, gene_in: int, out: int, update_genes: bool = True,
                 activation: nn.Module | None = None):
        super().__init__()
        self.out = out
        self.update_genes = update_genes
        self.act = activation if activation is not None else nn.Identity()
        # cell input -> [self term for cells | message for genes]
        self.cell_lin = nn.Linear(cell_in, 2 * out if update_genes else out, bias=False)
        self.gene_lin = nn.Linear(gene_in, 2 * out if update_genes else out, bias=False)
        self.cell_bias = nn.Parameter(torch.zeros(out))
        self.cell_norm = nn.BatchNorm1d(out)
        if update_genes:
            self.gene_bias = nn.Parameter(torch.zeros(out))
            self.gene_norm = nn.BatchNorm1d(out)

    def cell_parts(self, x_cell) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cells' (self term, message to their genes)."""
        pc = project(x_cell, self.cell_lin)
        return (pc[:, : self.out], pc[:, self.out :]) if self.update_genes else (pc, None)

    def gene_parts(self, x_gene: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Genes' (self term, message to their cells)."""
        pg = self.gene_lin(x_gene)
        return (pg[:, : self.out], pg[:, self.out :]) if self.update_genes else (None, pg)

    def finish_cells(self, self_term: torch.Tensor, aggregate: torch.Tensor) -> torch.Tensor:
        """New cell states from the self term and the mean of their genes' messages.

        Parameters
        ----------
        self_term
            The cells' own projection (first part of :meth:`cell_parts`).
        aggregate
            Per cell, the mean of its genes' messages (from :meth:`gene_parts`).
        """
        return self.act(self.cell_norm(self_term + aggregate + self.cell_bias))

    def finish_genes(self, self_term: torch.Tensor, aggregate: torch.Tensor) -> torch.Tensor:
        """New gene states from the self term and the mean of their cells' messages.

        Parameters
        ----------
        self_term
            The genes' own projection (first part of :meth:`gene_parts`).
        aggregate
            Per gene, the mean of its cells' messages (from :meth:`cell_parts`).
        """
        return self.act(self.gene_norm(self_term + aggregate + self.gene_bias))

    def forward(
        self, x_cell, x_gene: torch.Tensor, adj: BipartiteAdjacency
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """New (cell, gene) states of a (sub)graph; the gene states are None when ``update_genes=False``.

        Parameters
        ----------
        x_cell
            Cell states: a dense tensor, or :class:`~scgpcl.data.CellFeatures` for the first layer.
        x_gene
            Gene states (the gene embedding for the first layer).
        adj
            The edges between those cells and genes.
        """
        self_c, to_genes = self.cell_parts(x_cell)
        self_g, to_cells = self.gene_parts(x_gene)
        h_cell = self.finish_cells(self_c, adj.mean_genes_to_cells(to_cells))
        if not self.update_genes:
            return h_cell, None
        return h_cell, self.finish_genes(self_g, adj.mean_cells_to_genes(to_genes))


class GraphEncoder(nn.Module):
    """Stack of :class:`BipartiteSAGELayer`; returns the cell representation.

    ``activation`` (a key of :data:`ACTIVATIONS`) follows every layer but the
    last, whose output is the representation.
    """

    uses_graph = True

    def __init__(self, n_input: int, gene_dim: int, dims: tuple[int, ...], activation: str = "none"):
        super().__init__()
        layers = []
        cell_in, gene_in = n_input, gene_dim
        for i, d in enumerate(dims):
            last = i == len(dims) - 1
            act = None if last else ACTIVATIONS[activation]()
            layers.append(BipartiteSAGELayer(cell_in, gene_in, d, update_genes=not last, activation=act))
            cell_in = gene_in = d
        self.layers = nn.ModuleList(layers)

    def forward(self, x_cell, x_gene: torch.Tensor, adj: BipartiteAdjacency, n_target: int) -> torch.Tensor:
        """The first ``n_target`` cells' representations on a sampled subgraph.

        Parameters
        ----------
        x_cell
            Features of the subgraph's cells (:class:`~scgpcl.data.CellFeatures` or dense).
        x_gene
            The gene embedding rows of the subgraph's genes.
        adj
            The subgraph's edges.
        n_target
            The targets are the first ``n_target`` cells.
        """
        for layer in self.layers:
            x_cell, x_gene = layer(x_cell, x_gene, adj)
        return x_cell[:n_target]

    def gene_context(self, chunks: Callable[[], Iterable[CellChunk]], x_gene: torch.Tensor,
                     reduce: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
                     ) -> list[torch.Tensor]:
        """The genes' messages to cells at every layer, from the cells ``chunks()`` yields.

        A gene's state at layer l+1 averages the messages of its cells at layer
        l; with every cell as context this is the full-graph forward pass, done
        one chunk of cells at a time (one pass over the chunks per layer but
        the last).

        Parameters
        ----------
        chunks
            Returns a fresh iterable of the context cells' chunks (called once per layer but the last).
        x_gene
            The gene embedding (every gene).
        reduce
            ``None``, or ``reduce(sums, degrees)`` combining the per-gene message sums and degrees of
            these chunks with those of other processes' chunks (data-parallel training: an
            all-reduce) before they are divided.

        Returns
        -------
        list of torch.Tensor
            Per layer, the genes' messages to cells: what :meth:`encode_chunk` needs.
        """
        messages = []
        for depth, layer in enumerate(self.layers):
            self_g, to_cells = layer.gene_parts(x_gene)
            messages.append(to_cells)
            if not layer.update_genes:
                break
            sums = deg = None
            for chunk in chunks():
                h = self._cells(chunk, messages[:depth])
                _, to_genes = layer.cell_parts(h)
                s = chunk.adjacency.sum_cells_to_genes(to_genes)
                d = chunk.adjacency.sum_cells_to_genes(torch.ones(len(chunk.cells), 1, device=s.device))
                sums, deg = (s, d) if sums is None else (sums + s, deg + d)
            if sums is None:  # no cells here (a process whose share is empty)
                sums, deg = self_g.new_zeros(self_g.shape), self_g.new_zeros(len(self_g), 1)
            if reduce is not None:
                sums, deg = reduce(sums, deg)
            mean = sums / torch.where(deg > 0, deg, torch.ones_like(deg))
            x_gene = layer.finish_genes(self_g, mean)
        return messages

    def _cells(self, chunk: CellChunk, messages: list[torch.Tensor]) -> torch.Tensor:
        h = chunk.features
        for layer, to_cells in zip(self.layers, messages, strict=False):
            self_c, _ = layer.cell_parts(h)
            h = layer.finish_cells(self_c, chunk.adjacency.mean_genes_to_cells(to_cells))
        return h

    def encode_chunk(self, chunk: CellChunk, context: list[torch.Tensor]) -> torch.Tensor:
        """Representations of a chunk's cells, given :meth:`gene_context`.

        Parameters
        ----------
        chunk
            Cells with their features and their edges to every gene.
        context
            :meth:`gene_context`'s output.
        """
        return self._cells(chunk, context)


class MLPEncoder(nn.Module):
    """Ablation: the same widths without the graph.

    Linear + BatchNorm per layer, ``activation`` after every layer but the last.
    """

    uses_graph = False

    def __init__(self, n_input: int, gene_dim: int, dims: tuple[int, ...], activation: str = "none"):
        super().__init__()
        self.first = nn.Linear(n_input, dims[0])
        mods: list[nn.Module] = [nn.BatchNorm1d(dims[0])]
        d_in = dims[0]
        for d in dims[1:]:
            if activation != "none":  # no Identity module, so saved "none" models keep their state-dict keys
                mods.append(ACTIVATIONS[activation]())
            mods += [nn.Linear(d_in, d), nn.BatchNorm1d(d)]
            d_in = d
        self.rest = nn.Sequential(*mods)

    def forward(self, x_cell, x_gene, adj, n_target: int) -> torch.Tensor:
        """Representations of the target cells (the view holds only their features).

        Parameters
        ----------
        x_cell
            The target cells' features.
        x_gene, adj
            Not used: the MLP reads no graph (the arguments of :meth:`GraphEncoder.forward`).
        n_target
            Number of target cells.
        """
        return self.rest(project(x_cell, self.first))[:n_target]

    def gene_context(self, chunks, x_gene, reduce=None) -> list[torch.Tensor]:
        """Nothing: the MLP reads no genes.

        Parameters
        ----------
        chunks, x_gene, reduce
            Not used (the arguments of :meth:`GraphEncoder.gene_context`).
        """
        return []

    def encode_chunk(self, chunk: CellChunk, context) -> torch.Tensor:
        """Representations of a chunk's cells.

        Parameters
        ----------
        chunk
            Cells with their features.
        context
            Not used (:meth:`gene_context` returns nothing).
        """
        return self.rest(project(chunk.features, self.first))


#: ``encoder`` option -> class; each takes ``(n_input, gene_dim, dims, activation)``.
ENCODERS: dict[str, type[nn.Module]] = {"graph": GraphEncoder, "mlp": MLPEncoder}


class ZINBDecoder(nn.Module):
    """Linear(d, 256) + BatchNorm + ReLU, then heads for mean, dispersion and dropout.

    Returns ``(mean, theta, pi_logits)`` with mean = clamp(exp(.), 1e-5, 1e6) and
    theta = clamp(softplus(.), 1e-4, 1e4). The three heads are one fused Linear.
    With ``heads=1`` (MSE reconstruction) only the mean head exists and is linear.
    """

    def __init__(self, n_latent: int, n_hidden: int, n_genes: int, heads: int = 3):
        super().__init__()
        self.n_genes = n_genes
        self.heads = heads
        self.hidden = nn.Sequential(nn.Linear(n_latent, n_hidden), nn.BatchNorm1d(n_hidden), nn.ReLU())
        self.out = nn.Linear(n_hidden, heads * n_genes)

    def forward(self, z: torch.Tensor):
        """``(mean, theta, pi_logits)``; theta and pi_logits are None with one head."""
        o = self.out(self.hidden(z))
        if self.heads == 1:
            return o, None, None
        # split, not slices: the backward of three slices zero-fills three full-size gradients
        log_mean, theta_raw, pi_logits = o.split(self.n_genes, dim=1)
        mean = torch.exp(log_mean.clamp(_LOG_MEAN_MIN, _LOG_MEAN_MAX))
        theta = F.softplus(theta_raw).clamp(1e-4, 1e4)
        return mean, theta, pi_logits


class SCGPCLModule(nn.Module):
    """Encoder, decoder, learnable gene embedding and DEC cluster centres.

    Parameters
    ----------
    n_genes
        Width of the cell features (selected genes) and of the decoder output.
    encoder_dims, gene_embedding_dim, decoder_dim
        Layer widths.
    encoder
        A key of :data:`ENCODERS`.
    reconstruction
        A key of :data:`~scgpcl.module.RECONSTRUCTIONS` (sets the decoder's heads).
    encoder_activation
        A key of :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        n_genes: int,
        *,
        encoder_dims: tuple[int, ...] = (256, 64),
        gene_embedding_dim: int = 64,
        decoder_dim: int = 256,
        encoder: str = "graph",
        reconstruction: str = "zinb",
        encoder_activation: str = "none",
    ):
        super().__init__()
        from ._objective import RECONSTRUCTIONS

        for name, value, known in (("encoder", encoder, ENCODERS), ("reconstruction", reconstruction, RECONSTRUCTIONS),
                                   ("encoder_activation", encoder_activation, ACTIVATIONS)):
            if value not in known:
                raise ValueError(f"{name} must be one of {sorted(known)}, not {value!r}")
        self.n_genes = n_genes
        self.n_latent = encoder_dims[-1]
        self.reconstruction = reconstruction
        self.gene_embedding = nn.Embedding(n_genes, gene_embedding_dim)
        self.encoder = ENCODERS[encoder](n_genes, gene_embedding_dim, tuple(encoder_dims), encoder_activation)
        self.decoder = ZINBDecoder(self.n_latent, decoder_dim, n_genes, heads=RECONSTRUCTIONS[reconstruction].heads)
        self.cluster_centres: nn.Parameter | None = None

    @property
    def uses_graph(self) -> bool:
        """Whether the encoder reads the subgraph (the loader samples one only then)."""
        return self.encoder.uses_graph

    def init_cluster_centres(self, centres: torch.Tensor) -> None:
        """Create (or replace) the DEC cluster centres."""
        self.cluster_centres = nn.Parameter(centres.detach().clone().float())

    def encode(self, view: View) -> torch.Tensor:
        """Representations of a view's target cells (feature masks applied)."""
        x_gene = self.gene_embedding(view.genes)
        if view.gene_mask is not None:
            x_gene = x_gene * view.gene_mask
        return self.encoder(view.features, x_gene, view.adjacency, view.n_target)

    @contextlib.contextmanager
    def _evaluating(self):
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def gene_context(self, context: Callable[[], Iterable[CellChunk]], reduce=None) -> list[torch.Tensor]:
        """The genes' states given the cells ``context()`` yields (eval mode; empty for the MLP).

        With every cell as context, :meth:`embed_cells` then gives the
        full-graph representation, computed one chunk at a time.

        Parameters
        ----------
        context
            Returns a fresh iterable of the context cells' chunks.
        reduce
            ``None``, or as in :meth:`GraphEncoder.gene_context` (the context cells spread over processes).

        Returns
        -------
        list of torch.Tensor
            :meth:`GraphEncoder.gene_context`'s output.
        """
        with self._evaluating():
            return self.encoder.gene_context(context, self.gene_embedding.weight, reduce)

    def embed_cells(self, chunks: Iterable[CellChunk], gene_context: list[torch.Tensor]) -> torch.Tensor:
        """Representations of the cells of ``chunks`` (eval mode, no sampling or masking).

        Parameters
        ----------
        chunks
            The cells to embed, chunk by chunk.
        gene_context
            :meth:`gene_context`'s output for the cells the genes' states average over.

        Returns
        -------
        torch.Tensor
            One row per cell, in the order of ``chunks``.
        """
        with self._evaluating():
            parts = [self.encoder.encode_chunk(c, gene_context) for c in chunks]
        if not parts:
            return torch.zeros(0, self.n_latent, device=self.gene_embedding.weight.device)
        return torch.cat(parts)

    def embed(self, chunks: Callable[[], Iterable[CellChunk]],
              context: Callable[[], Iterable[CellChunk]] | None = None) -> torch.Tensor:
        """Representations of the cells ``chunks()`` yields (eval mode).

        Parameters
        ----------
        chunks
            Returns an iterable of the chunks of cells to embed.
        context
            Returns an iterable of the chunks of the cells the genes' states are averaged
            over (:meth:`gene_context`); default: ``chunks``.
        """
        return self.embed_cells(chunks(), self.gene_context(context or chunks))

    def decode(self, z: torch.Tensor):
        """The decoder's outputs for representations ``z``."""
        return self.decoder(z)

    def loss(self, batch, context, weights: dict[str, float]):
        """The named loss terms of a minibatch (:func:`scgpcl.module.batch_loss`).

        Parameters
        ----------
        batch
            A training minibatch with its augmented views (:class:`~scgpcl.data.Batch`).
        context
            The stage and what it adds (prototypes, cluster centres): a :class:`~scgpcl.module.LossContext`.
        weights
            Weight of each loss term by name; a term of weight 0 is skipped.
        """
        from ._objective import batch_loss

        return batch_loss(self, batch, context, weights)
