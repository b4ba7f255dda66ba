"""Typed configuration for every stage of scGPCL.

Defaults follow the reference implementation (``docs/method.md``); where the project
recommends something else, :func:`fast` says what and why.
Explicit keyword arguments always win over a config object.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class PreprocessConfig:
    """Gene selection and normalisation (docs/method.md section 1)."""

    #: ``"variance"``: top ``hvg_fraction`` of genes by raw-count variance
    #: (reference); ``"seurat"``: scanpy's dispersion-based HVG on log-normalised
    #: counts, ``n_top_genes``; ``"seurat_v3"``: scanpy's Seurat v3 HVG on counts
    #: (needs scikit-misc), ``n_top_genes``.
    gene_selection: Literal["variance", "seurat", "seurat_v3", "none"] = "variance"
    hvg_fraction: float = 0.2
    #: Never keep fewer genes than this (when the data has that many): 20 % of
    #: an input already cut to ~2000 genes would leave only ~400.
    min_genes: int = 2000
    #: Number of genes for ``gene_selection="seurat"`` or ``"seurat_v3"``.
    n_top_genes: int = 2000


@dataclass
class ModelConfig:
    """Network sizes (docs/method.md section 4)."""

    encoder_dims: tuple[int, ...] = (256, 64)
    gene_embedding_dim: int = 64
    decoder_dim: int = 256
    #: ``"graph"``: bipartite GraphSAGE (scGPCL); ``"mlp"``: ablation without the graph.
    encoder: Literal["graph", "mlp"] = "graph"
    #: ``"zinb"`` (reference) or ``"mse"`` on log-normalised values.
    reconstruction: Literal["zinb", "mse"] = "zinb"
    #: Non-linearity after every encoder layer but the last: ``"none"`` (the
    #: reference: Linear/SAGE + BatchNorm only), ``"relu"`` or ``"elu"``.
    encoder_activation: Literal["none", "relu", "elu"] = "none"
    tau: float = 0.25
    #: Student-t degrees of freedom for DEC.
    alpha: float = 1.0


@dataclass
class SamplerConfig:
    """Subgraph sampling and feature masking (docs/method.md section 3)."""

    batch_size: int = 1024
    #: Node budget per hop, alternating genes (hop 1) and cells (hop 2).
    num_samples: tuple[int, ...] = (2048, 1024)
    #: Fraction of feature columns zeroed per node type in view 1 and view 2.
    feature_drop: tuple[float, float] = (0.2, 0.2)
    #: Neighbour cap of the minibatch views: a node aggregates about this many
    #: of its neighbours, drawn anew per view and direction, as the reference's
    #: sampler does (torch_sparse ``hgt_sample``: 50). 0 keeps every edge of the
    #: sampled subgraph. The embeddings used for k-means, DEC targets and the
    #: labels always use the full graph. Off in both presets: with the `fast`
    #: preset, 50 lowered the mean ARI over the 13 benchmark datasets by 0.005
    #: (3 seeds; -0.03 to -0.05 on 5 of them, +0.11 on baron_human), so the
    #: `faithful` preset leaves it out too, a documented difference from the
    #: reference (``benchmarks/results/neighbour_cap.md``).
    max_neighbors: int = 0
    #: Edge weights of the views' mean aggregation. ``"none"``: every edge
    #: weighs 1, as the reference's SAGE mean. ``"lognorm"``: the cell's
    #: log-normalised expression of the gene, so a cell's message is the
    #: expression-weighted mean of its genes' (and a gene's, of its cells')
    #: representations. The sampler draws by the binary graph either way.
    edge_weight: Literal["none", "lognorm"] = "none"


@dataclass
class TrainConfig:
    """Optimisation schedule (docs/method.md section 6)."""

    pretrain_epochs: int = 200
    warmup_epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lambda_ins: float = 1.0
    lambda_proto: float = 0.05
    #: Pre-training stops when ARI(labels_t, labels_{t-1}) exceeds this.
    convergence_ari: float = 0.99
    #: Also stop when that ARI has not beaten its best value of this run for
    #: this many post-warm-up epochs (0: off, the reference's rule only). With
    #: fresh k-means restarts the ARI between epochs stays at 0.6-0.97 from
    #: restart noise alone, so the 0.99 rule rarely fires; this is early
    #: stopping on the same stability measure (benchmarks/results/stopping.md).
    convergence_patience: int = 0
    #: k-means restarts for the DEC initialisation and the final labels.
    kmeans_n_init: int = 20
    #: k-means restarts in each post-warm-up epoch (prototypes and convergence
    #: check), plus the warm start of ``kmeans_warm_start``.
    kmeans_n_init_epoch: int = 20
    #: Also try the previous epoch's centres as a k-means start in each
    #: post-warm-up epoch (kept when it has the lowest inertia). Off by
    #: default, as in the reference (fresh restarts only): the warm start makes
    #: consecutive epochs' labels agree by construction, so the convergence
    #: test passes right after the warm-up and the prototypical loss barely
    #: acts; with it the `fast` preset's mean ARI over 13 datasets was lower
    #: (``benchmarks/results/warm_start.md``), though runs are shorter.
    kmeans_warm_start: bool = False
    #: Where the prototypes come from. ``"epoch"`` (both presets): k-means on
    #: every cell's full-graph embedding once per post-warm-up epoch, its
    #: centres and labels used by all minibatches of the next epoch.
    #: ``"batch"``: as the reference code does, k-means on each minibatch's
    #: second-view representations (detached; ``kmeans_n_init_epoch``
    #: restarts per granularity), its centres and labels used for that
    #: minibatch only; the per-epoch k-means then runs at K alone, for the
    #: convergence check. Level with "epoch" over the 13 benchmark datasets
    #: (``fast``, 3 seeds: 0.690 vs 0.689 mean ARI; ``benchmarks/results/prototypes.md``).
    prototypes: str = "epoch"
    finetune_epochs: int = 200
    finetune_lr: float = 1.0
    finetune_rho: float = 0.95
    lambda_cluster: float = 1.0
    #: Mask feature columns (``feature_drop[0]``) in the fine-tuning minibatches
    #: as in pre-training's first view. The target distribution and the final
    #: labels always come from the unmasked embedding. Turning it off helped
    #: on the datasets it was studied on (baron_human +0.09) but not on the
    #: 13-dataset benchmark (cite_cbmc and human_kidney lost 0.05-0.07), so
    #: both presets keep it on (``benchmarks/results/dec.md``).
    finetune_masking: bool = True
    #: Where DEC fine-tuning starts: ``"kmeans"`` (reference): the best of
    #: ``kmeans_n_init`` k-means restarts on the pre-trained embedding;
    #: ``"consensus"``: the partition that agrees best with that one and with
    #: the k-means labels of the last ``dec_init_epochs`` pre-training epochs
    #: (computed anyway for the prototypes), its cluster means as the centres.
    #: Single k-means optima on one embedding differ by up to 0.5 ARI
    #: (``benchmarks/results/dec.md``); the consensus averages over epochs.
    #: It helped on the seven datasets it was studied on (+0.02 ARI) but lost
    #: on the six others (-0.03, up to -0.14), so it is not a preset default
    #: (``benchmarks/results/init.md``).
    dec_init: str = "kmeans"
    dec_init_epochs: int = 10
    #: Fine-tuning stops when fewer than this fraction of labels change.
    finetune_tol: float = 1e-3
    #: Skip the DEC stage (ablation); labels then come from k-means.
    finetune: bool = True
    #: With ``n_clusters=None``: criterion that estimates K on the embedding
    #: after the warm-up (``scgpcl.train._auto_k``): "consensus" (default:
    #: the geometric mean of the next three), "leiden_modularity",
    #: "leiden_stability" (these three use igraph), "eigengap" or
    #: "silhouette". Chosen by measurement on the benchmark's 39 warm-up
    #: embeddings and end to end (benchmarks/results/auto_k_consensus.md;
    #: auto_k.md has the earlier choices).
    auto_k_method: str = "consensus"
    #: Largest K the estimate may return (also capped at n_cells // 10).
    auto_k_max: int = 30


@dataclass
class SCGPCLConfig:
    """Everything needed to reproduce a run."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SCGPCLConfig":
        def build(kind, values):
            names = {f.name: f for f in dataclasses.fields(kind)}
            unknown = set(values) - set(names)
            if unknown:
                raise ValueError(f"unknown {kind.__name__} option(s): {sorted(unknown)}")
            kwargs = {}
            for k, v in values.items():
                kwargs[k] = tuple(v) if isinstance(v, list) else v
            return kind(**kwargs)

        return cls(
            preprocess=build(PreprocessConfig, d.get("preprocess", {})),
            model=build(ModelConfig, d.get("model", {})),
            sampler=build(SamplerConfig, d.get("sampler", {})),
            train=build(TrainConfig, d.get("train", {})),
        )

    def validate(self) -> "SCGPCLConfig":
        """Check every value's range; raise ``ValueError`` naming the option. Returns ``self``."""
        p, m, sa, t = self.preprocess, self.model, self.sampler, self.train
        problems: list[str] = []

        def need(ok: bool, name: str, value: Any, rule: str) -> None:
            if not ok:
                problems.append(f"{name}={value!r} ({rule})")

        def choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
            need(value in allowed, name, value, "one of " + ", ".join(map(repr, allowed)))

        def whole(name: str, value: Any, low: int) -> None:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low
            need(ok, name, value, f"a whole number >= {low}")

        def number(name: str, value: Any, low: float, *, strict: bool, high: float | None = None) -> None:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
            ok = ok and (value > low if strict else value >= low) and (high is None or value <= high)
            rule = f"a number {'>' if strict else '>='} {low}" + (f" and <= {high}" if high is not None else "")
            need(ok, name, value, rule)

        choice("gene_selection", p.gene_selection, ("variance", "seurat", "seurat_v3", "none"))
        number("hvg_fraction", p.hvg_fraction, 0, strict=True, high=1)
        whole("min_genes", p.min_genes, 0)
        whole("n_top_genes", p.n_top_genes, 2)
        def counts(values: Any) -> bool:
            return isinstance(values, (tuple, list)) and len(values) >= 1 and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in values)

        need(counts(m.encoder_dims),
             "encoder_dims", m.encoder_dims, "one or more layer widths >= 1")
        whole("gene_embedding_dim", m.gene_embedding_dim, 1)
        whole("decoder_dim", m.decoder_dim, 1)
        choice("encoder", m.encoder, ("graph", "mlp"))
        choice("reconstruction", m.reconstruction, ("zinb", "mse"))
        choice("encoder_activation", m.encoder_activation, ("none", "relu", "elu"))
        number("tau", m.tau, 0, strict=True)
        number("alpha", m.alpha, 0, strict=True)
        whole("max_neighbors", sa.max_neighbors, 0)
        choice("edge_weight", sa.edge_weight, ("none", "lognorm"))
        whole("batch_size", sa.batch_size, 2)  # BatchNorm needs two cells per minibatch
        need(counts(sa.num_samples),
             "num_samples", sa.num_samples, "one or more node budgets >= 1")
        need(isinstance(sa.feature_drop, (tuple, list)) and len(sa.feature_drop) == 2
             and all(isinstance(f, numbers.Real) and not isinstance(f, bool) and 0 <= f < 1 for f in sa.feature_drop),
             "feature_drop", sa.feature_drop, "two fractions in [0, 1)")
        whole("pretrain_epochs", t.pretrain_epochs, 1)
        whole("warmup_epochs", t.warmup_epochs, 0)
        number("lr", t.lr, 0, strict=True)
        number("weight_decay", t.weight_decay, 0, strict=False)
        number("lambda_ins", t.lambda_ins, 0, strict=False)
        number("lambda_proto", t.lambda_proto, 0, strict=False)
        number("convergence_ari", t.convergence_ari, 0, strict=True)
        whole("convergence_patience", t.convergence_patience, 0)
        whole("kmeans_n_init", t.kmeans_n_init, 1)
        whole("kmeans_n_init_epoch", t.kmeans_n_init_epoch, 1)
        whole("finetune_epochs", t.finetune_epochs, 0)
        number("finetune_lr", t.finetune_lr, 0, strict=True)
        number("finetune_rho", t.finetune_rho, 0, strict=False, high=1)
        number("lambda_cluster", t.lambda_cluster, 0, strict=False)
        number("finetune_tol", t.finetune_tol, 0, strict=False)
        whole("auto_k_max", t.auto_k_max, 2)
        choice("dec_init", t.dec_init, ("kmeans", "consensus"))
        choice("prototypes", t.prototypes, ("epoch", "batch"))
        whole("dec_init_epochs", t.dec_init_epochs, 1)
        if problems:
            raise ValueError("invalid option value(s): " + "; ".join(problems))
        return self

    def override(self, **kwargs: Any) -> "SCGPCLConfig":
        """Return a copy with flat keyword overrides (``lr=1e-3``) applied.

        Each name must belong to exactly one section; an unknown name is an error.
        """
        d = self.to_dict()
        for key, value in kwargs.items():
            sections = [s for s in d if key in d[s]]
            if not sections:
                raise ValueError(f"unknown option {key!r}")
            d[sections[0]][key] = value
        return SCGPCLConfig.from_dict(d)


def faithful() -> SCGPCLConfig:
    """The reference implementation's defaults (docs/method.md sections 1-6)."""
    return SCGPCLConfig()


def fast() -> SCGPCLConfig:
    """The project's recommended settings: a quicker schedule and scanpy's gene selection.

    - Larger learning rate, shorter warm-up, fewer k-means restarts per epoch
      (``benchmarks/results/core.md``).
    - ``convergence_patience=15``: pre-training also stops once the
      consecutive-epoch ARI has not improved for 15 epochs. With fresh k-means
      restarts the reference's 0.99 rule rarely fires, and on 25 traces the
      embedding did not improve after ~5 post-warm-up epochs; over 13
      datasets x 3 seeds it cut pre-training from 81 to 53 epochs on average and
      the whole benchmark's CPU time from 184 to 106 minutes (k-means ARI of
      the pre-trained embedding +0.009 +- 0.010, final ARI -0.015 +- 0.012,
      paired; ``benchmarks/results/stopping.md``).
    - ``gene_selection="seurat"`` (2000 genes by dispersion of log-normalised
      expression) instead of the reference's top 20 % by raw-count variance,
      which favours a few very highly expressed genes (on pancreas data the
      hormone genes): with PCA + k-means on the eight datasets with more than
      2000 genes, mean ARI 0.55 against 0.69, up to 0.57 lower (cellbench),
      though ahead on camp and worm_neuron (``benchmarks/results/gene_selection.md``).

    The reference settings stay available as :func:`faithful`.
    """
    return SCGPCLConfig().override(
        lr=1e-3, pretrain_epochs=100, warmup_epochs=30, finetune_epochs=100, kmeans_n_init_epoch=5,
        convergence_patience=15, gene_selection="seurat",
    )
