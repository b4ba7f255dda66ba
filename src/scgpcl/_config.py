"""Typed configuration for every stage of scGPCL: the one source of truth for options.

Each option is a dataclass field whose metadata holds its help text and its
valid range; :meth:`SCGPCLConfig.validate`, the command line's options and
their help (``scgpcl cluster --help``) and the documentation are all generated
from these fields, so a default or a choice is written in exactly one place.

The defaults are the project's recommended settings (:func:`recommended`);
:func:`faithful` reproduces the reference implementation (docs/method.md sections 1-6).
Explicit keyword arguments always win over a config object. This module
imports nothing but the standard library, so the command line can build its
parser without loading torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ModelConfig", "PreprocessConfig", "SamplerConfig", "SCGPCLConfig", "TrainConfig", "faithful", "fast",
    "option_fields", "recommended",
]


def _opt(default: Any = dataclasses.MISSING, help: str = "", *, low: float | None = None,
         high: float | None = None, strict: bool = False, cli: bool = True, factory: Any = dataclasses.MISSING):
    """A config field with its help text and range (``low``/``high``; ``strict``: ``> low``)."""
    meta = {"help": help, "low": low, "high": high, "strict": strict, "cli": cli}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


#: the cell scalings (``target_sum``) that ``choose_target_sum`` chooses between: the reference's median
#: scaling (0) and scanpy's 10,000 counts
TARGET_SUM_CANDIDATES = (0.0, 1e4)


@dataclass
class PreprocessConfig:
    """Gene selection and normalisation (docs/method.md section 1)."""

    gene_selection: Literal["variance", "seurat", "seurat_v3", "none"] = _opt(
        "seurat", "genes the model uses: 'seurat' (scanpy's dispersion-based HVG on log-normalised counts, "
        "n_top_genes), 'seurat_v3' (scanpy's count-based HVG, needs scikit-misc), 'variance' (the top "
        "hvg_fraction by raw-count variance, the reference) or 'none'")
    hvg_fraction: float = _opt(0.2, "fraction of genes kept by gene_selection='variance'", low=0, high=1, strict=True)
    min_genes: int = _opt(2000, "gene_selection='variance' never keeps fewer genes than this (when the data has "
                          "that many): 20 % of an input already cut to ~2000 genes would leave only ~400", low=0)
    n_top_genes: int = _opt(2000, "genes kept by gene_selection='seurat' or 'seurat_v3'", low=2)
    min_cells: int = _opt(
        1, "genes detected (non-zero count) in fewer cells than this are dropped before gene selection; 1 keeps "
           "every gene with a count, as the reference. On a few hundred shallow cells, genes seen in one or two "
           "cells have the highest dispersion and can fill the selection: 3 raised worm_neuron cut to 250-500 "
           "cells from ARI 0.05-0.10 to 0.33-0.46, but lost 0.021 over 13 full datasets (worm_neuron itself "
           "-0.14), so it is not the default (measured with lambda_ins_cells=512, lambda_ins_power=2; "
           "benchmarks/results/few_cells.md)", low=1)
    target_sum: float = _opt(
        0.0, "cell features: each cell's counts are scaled to this total over all its genes before log1p "
             "(10000: scanpy's normalize_total default); 0: to the median total over the selected genes, as "
             "the reference. By default choose_target_sum picks 0 or 10000 per dataset", low=0)
    choose_target_sum: bool = _opt(
        True, "cell features: choose target_sum per dataset between 0 (median scaling) and 10000 by the "
              "k-means silhouette at K on the principal components of a sample of cells (with an "
              "estimated K only with provisional_k; otherwise target_sum is kept); the chosen value replaces "
              "target_sum in the model's config. "
              "Giving target_sum (CLI, keyword arguments, override()) turns the choice off unless "
              "choose_target_sum is also given")
    provisional_k: bool = _opt(
        False, "with choose_target_sum and an estimated K (n_clusters auto): choose target_sum at a provisional "
               "K, estimated by auto_k_method on the principal components of the sample the choice uses (at "
               "the configured target_sum, the median by default); the final K is still estimated on the "
               "representation after the warm-up. Measured worse than keeping target_sum, so off. No effect "
               "with a given K or without the choice")


@dataclass
class ModelConfig:
    """Network sizes (docs/method.md section 4)."""

    encoder_dims: tuple[int, ...] = _opt((256, 64), "widths of the encoder layers; the last is the "
                                         "representation's dimension", low=1)
    gene_embedding_dim: int = _opt(64, "width of the learnable gene embedding", low=1)
    decoder_dim: int = _opt(256, "width of the decoder's hidden layer", low=1)
    encoder: Literal["graph", "mlp"] = _opt(
        "graph", "'graph': GraphSAGE over the cell-gene bipartite graph (scGPCL); 'mlp': the same widths without "
                 "the graph (an ablation)")
    reconstruction: Literal["zinb", "mse"] = _opt(
        "zinb", "reconstruction loss: 'zinb' (zero-inflated negative binomial on the raw counts, the reference) "
                "or 'mse' (on the z-scored log-normalised values)")
    encoder_activation: Literal["none", "relu", "elu"] = _opt(
        "none", "non-linearity after every encoder layer but the last ('none': Linear/SAGE + BatchNorm only, "
                "the reference)")
    tau: float = _opt(0.25, "temperature of the contrastive losses", low=0, strict=True)
    alpha: float = _opt(1.0, "degrees of freedom of DEC's Student-t kernel", low=0, strict=True)


@dataclass
class SamplerConfig:
    """Minibatches, subgraph sampling and feature masking (docs/method.md section 3)."""

    batch_size: int = _opt(1024, "target cells per minibatch", low=2)
    min_minibatches: int = _opt(
        0, "data with fewer than this many times batch_size cells train with minibatches of about cells / this "
           "(not under min_batch_size), so that a round passes over each cell about as often as on large data; "
           "0: off, every minibatch batch_size cells (benchmarks/results/thousand_cells.md)", low=0)
    min_batch_size: int = _opt(256, "with min_minibatches: the smallest target minibatch it makes", low=2)
    num_samples: tuple[int, ...] = _opt((2048, 1024), "node budget per sampling hop: genes at hop 1, cells at "
                                        "hop 2, ...", low=1)
    feature_drop: tuple[float, float] = _opt((0.2, 0.2), "fraction of feature columns zeroed per node type in "
                                             "view 1 and view 2", low=0, high=0.999999)
    thin_counts: float = _opt(
        0.0, "depth augmentation: each training view keeps each cell's counts with a probability drawn per cell "
             "log-uniformly in [thin_counts, 1] (binomial thinning; features and edges from the thinned counts), "
             "so the contrastive losses see the same cell at two depths; fine-tuning's views too when "
             "finetune_masking is on. 0: off. It fixes the weak-signal simulation but lost 0.03 ARI over 13 real "
             "datasets (benchmarks/results/accuracy_notes.md)", low=0, high=0.999999)
    max_neighbors: int = _opt(
        0, "neighbour cap of the minibatch views, as the reference's sampler (it uses 50): a node aggregates "
           "about this many of its neighbours, drawn anew per view; 0 keeps every edge of the sampled subgraph. "
           "Off in both presets: over 13 datasets a cap of 50 changed the mean ARI by -0.000 +- 0.007 "
           "(benchmarks/results/neighbour_cap.md)", low=0)
    edge_weight: Literal["none", "lognorm"] = _opt(
        "none", "weights of the views' mean aggregation: 'none' (every edge 1, the reference's SAGE mean) or "
                "'lognorm' (the cell's log-normalised expression of the gene)")
    chunk_cells: int = _opt(8192, "cells per chunk when embedding many cells: a memory setting, but another value "
                            "adds in another order, so the numbers differ in the last digits (as with another "
                            "thread count) and training can amplify that", low=1)

    def batch_for(self, n_cells: int) -> int:
        """The target minibatch on ``n_cells`` cells: ``batch_size``, smaller on small data with ``min_minibatches``.

        ``min(batch_size, max(min_batch_size, ceil(n_cells / min_minibatches)))``; ``batch_size`` itself when
        ``min_minibatches`` is 0 or when ``batch_size`` is already under ``min_batch_size``.
        """
        if self.min_minibatches <= 0:
            return self.batch_size
        return min(self.batch_size, max(self.min_batch_size, -(-int(n_cells) // self.min_minibatches)))


@dataclass
class TrainConfig:
    """Optimisation schedule (docs/method.md section 6).

    Training runs in *rounds*: ``round_steps`` optimizer steps (at most one
    epoch, but at least ``min_round_steps``: on small data a round is one or
    a few epochs), then the global step: after
    the warm-up, k-means on the representation of up to ``sample_cells``
    cells gives the prototypes and the convergence check; in fine-tuning the
    global step refreshes DEC's target. Budgets count rounds, so the number
    of optimizer steps is bounded however many cells there are.
    """

    round_steps: int = _opt(20, "optimizer steps per round (at most one epoch, at least min_round_steps); 0: a "
                            "round is one epoch, as the reference (whose step count then grows with the cells)",
                            low=0)
    min_round_steps: int = _opt(5, "on data with fewer minibatches per epoch than this, a round still has this "
                                "many steps (several epochs; at most round_steps): small data train longer; "
                                "1: a round is at most one epoch", low=1)
    sample_cells: int = _opt(20000, "cells used by the global steps (k-means prototypes, convergence check, "
                             "DEC target frequencies, auto-K): all cells up to this number, else a fixed random "
                             "sample of them; 0: always all cells. Final labels always cover every cell", low=0)
    pretrain_rounds: int = _opt(25, "maximum pre-training rounds", low=1)
    warmup_rounds: int = _opt(10, "pre-training rounds before the prototypical loss starts", low=0)
    lr: float = _opt(1e-3, "pre-training learning rate (AdamW)", low=0, strict=True)
    lr_decay: Literal["none", "cosine"] = _opt(
        "none", "pre-training learning rate over the rounds: 'none' (constant) or 'cosine' (from lr in round 1 "
                "towards 0 at pretrain_rounds)")
    weight_decay: float = _opt(1e-4, "weight decay of both optimisers", low=0)
    lambda_ins: float = _opt(1.0, "weight of the instance-wise contrastive loss", low=0)
    lambda_ins_cells: int = _opt(
        768, "data with fewer cells than this train with lambda_ins scaled by (cells / lambda_ins_cells) ** "
             "lambda_ins_power: on a few hundred cells the instance-wise loss can tell every cell apart without "
             "learning the types (benchmarks/results/few_cells.md); 0: off, the reference", low=0)
    lambda_ins_power: float = _opt(4.0, "with lambda_ins_cells: the power of that scale (1: linear)", low=0)
    lambda_proto: float = _opt(0.05, "weight of the prototypical contrastive loss", low=0)
    average_rounds: int = _opt(
        0, "the network that leaves pre-training (and starts fine-tuning) has the mean of the weights at the end "
           "of the last this-many pre-training rounds, batch-norm statistics included (weight averaging, as "
           "torch.optim.swa_utils); 0 or 1: the last round's weights", low=0)
    convergence_ari: float = _opt(0.99, "pre-training stops when the ARI between consecutive rounds' k-means "
                                  "labels exceeds this (above 1: never)", low=0, strict=True)
    convergence_patience: int = _opt(
        5, "also stop pre-training when that ARI has not beaten its best for this many post-warm-up rounds "
            "(0: off, the reference's rule only; benchmarks/results/stopping.md)", low=0)
    kmeans_n_init: int = _opt(20, "k-means restarts for the DEC initialisation and the final labels", low=1)
    kmeans_select: Literal["inertia", "central"] = _opt(
        "inertia", "which of the kmeans_n_init k-means runs starts fine-tuning (and gives the labels without it): "
                   "'inertia' (the lowest, the reference) or 'central' (the one whose labels agree best with the "
                   "other runs'; benchmarks/results/clustering_step.md)")
    kmeans_pca_weight: float = _opt(
        0.5, "the k-means that starts fine-tuning (and gives the labels without it) runs on the representation "
             "joined with the input features' 50 principal components, each block scaled to unit total variance "
             "and the PCA block weighted by this (0: the representation alone; benchmarks/results/hybrid.md)",
        low=0)
    dec_pca_target: bool = _opt(
        True, "with kmeans_pca_weight > 0, DEC's target distribution also comes from the joined space (the "
               "PCA block fixed at the start of fine-tuning), so that fine-tuning keeps pulling towards it; the "
               "labels still come from the representation")
    kmeans_n_init_round: int = _opt(5, "k-means restarts in each post-warm-up round (prototypes and "
                                    "convergence check)", low=1)
    kmeans_warm_start: bool = _opt(False, "also try the previous round's centres as a k-means start after each "
                                   "round (benchmarks/results/warm_start.md)")
    prototypes: Literal["round", "batch"] = _opt(
        "round", "where the prototypes come from: 'round' (k-means on the sampled cells' full-graph "
                 "representation after each round) or 'batch' (k-means on each minibatch's second view, as the "
                 "reference code; benchmarks/results/prototypes.md)")
    finetune: bool = _opt(True, "run DEC fine-tuning; otherwise labels come from k-means")
    finetune_rounds: int = _opt(20, "maximum fine-tuning rounds", low=0)
    finetune_lr: float = _opt(1.0, "fine-tuning learning rate (Adadelta)", low=0, strict=True)
    finetune_rho: float = _opt(0.95, "Adadelta's rho (the decay of its running averages)", low=0, high=1)
    lambda_cluster: float = _opt(1.0, "weight of DEC's clustering loss", low=0)
    finetune_keep_clusters: bool = _opt(
        True, "stop fine-tuning when a round leaves a cluster without cells, and keep the network as it was "
              "before that round (DEC can empty clusters on data that hold K groups)")
    finetune_masking: bool = _opt(True, "mask feature columns in the fine-tuning minibatches as in "
                                  "pre-training's first view (benchmarks/results/dec.md)")
    dec_init: Literal["kmeans", "consensus"] = _opt(
        "kmeans", "where fine-tuning starts: 'kmeans' on the pre-trained representation (reference), or "
                  "'consensus' of it and the last dec_init_rounds rounds' k-means labels "
                  "(benchmarks/results/init.md)")
    dec_init_rounds: int = _opt(10, "rounds whose labels dec_init='consensus' combines", low=1)
    finetune_tol: float = _opt(1e-3, "fine-tuning stops when fewer than this fraction of labels change "
                               "between rounds", low=0)
    auto_k_method: Literal["consensus", "leiden_modularity", "leiden_stability", "eigengap", "silhouette"] = _opt(
        "consensus", "with n_clusters auto: the criterion that estimates K on the representation after the "
                     "warm-up (benchmarks/results/auto_k_consensus.md)")
    auto_k_max: int = _opt(30, "with n_clusters auto: the largest K considered (also at most cells / 10)", low=2)
    loss_weights: dict[str, float] = _opt(
        help="weights of added loss terms by name (scgpcl.module.register_loss_term)", cli=False, factory=dict,
        low=0)


#: Options of earlier versions that are gone, by section, with the value at which they changed nothing: a
#: saved configuration holding that value loads without them (a model of the first version failed to load
#: with "unknown PreprocessConfig option(s): ['max_value']" and was called unreadable). Any other value
#: trained something this version does not have.
_REMOVED = {
    "preprocess": {"max_value": None},
    "model": {"ins_head": 0},
    "train": {"ins_debias": False, "ins_neighbours": 0, "pretrain_keep": "last"},
}


class OtherVersionError(ValueError):
    """A saved configuration of another scgpcl version that this one cannot take (the message says why)."""


#: Option names of earlier versions -> today's (saved models and old scripts keep working).
_RENAMED = {
    "pretrain_epochs": "pretrain_rounds", "warmup_epochs": "warmup_rounds", "finetune_epochs": "finetune_rounds",
    "kmeans_n_init_epoch": "kmeans_n_init_round", "dec_init_epochs": "dec_init_rounds",
}
#: Options of other tools that scanpy users pass out of habit -> what scgpcl takes instead (in the error).
_FOREIGN = {
    "use_raw": "scgpcl reads X, or a layer (layer=); to cluster the counts in adata.raw, pass adata.raw.to_adata() "
               "(the command line's --use-raw does this)",
    "resolution": "scgpcl takes the number of clusters, not a resolution: pass n_clusters=K, or n_clusters=None to "
                  "estimate it",
    "use_rep": "scgpcl learns its own representation from the counts (X or layer=) and stores it in "
               "obsm['X_' + key_added]; it does not cluster a given one",
    "seed": "pass random_state= instead",
    "max_epochs": "training runs in rounds: pretrain_rounds= and finetune_rounds= bound its two stages",
    "n_epochs": "training runs in rounds: pretrain_rounds= and finetune_rounds= bound its two stages",
    "progress": "SCGPCL(...) only builds the model: pass it to .train(progress=False), or to scgpcl.tl.cluster",
    "random_seed": "pass random_state= instead",
}
_SECTIONS = {"preprocess": PreprocessConfig, "model": ModelConfig, "sampler": SamplerConfig, "train": TrainConfig}


def flat_config(config: SCGPCLConfig) -> dict[str, Any]:
    """``config`` as flat ``"section.option"`` keys, as a run records it in ``uns[key]['params']['config']``.

    A dict-valued option (``loss_weights``) goes one level deeper (``"train.loss_weights.zinb"``) and tuples
    become lists; :meth:`SCGPCLConfig.from_dict` reads it back (:func:`_nested`).
    """

    def flat(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
        return out

    return flat(config.to_dict(), "")


def _nested(d: Mapping[str, Any]) -> dict[str, Any]:
    """``to_dict()``'s sections, from themselves or from flat ``"section.option"`` keys; other keys refused."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        section, dot, option = str(key).partition(".")
        if section not in _SECTIONS:
            raise ValueError(f"unknown configuration key {key!r}: give to_dict()'s sections ({', '.join(_SECTIONS)}) "
                             "or the 'section.option' keys of a recorded configuration "
                             "(uns['scgpcl']['params']['config'])")
        if not dot and value is not None and not isinstance(value, Mapping):
            raise ValueError(f"configuration section {key!r} must map option names to values, not {value!r}")
        if not dot:
            if value is not None:
                out.setdefault(section, {}).update(value)
            continue
        option, dot, sub = option.partition(".")  # a dict-valued option (loss_weights) is recorded one level deeper
        if dot:
            out.setdefault(section, {}).setdefault(option, {})[sub] = value
        else:
            out.setdefault(section, {})[option] = value
    return out


def _plain(v: Any) -> Any:
    """A saved option value as the dataclass takes it: arrays and lists as tuples, numpy scalars as Python ones."""
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    return tuple(v) if isinstance(v, list) else v


def option_fields() -> list[tuple[str, dataclasses.Field, Any]]:
    """Every option as ``(section, field, resolved type)``, in declaration order."""
    out = []
    for section, kind in _SECTIONS.items():
        hints = typing.get_type_hints(kind)
        out += [(section, f, hints[f.name]) for f in dataclasses.fields(kind)]
    return out


def _check(name: str, value: Any, typ: Any, meta: dict) -> str | None:
    """Why ``value`` is not a valid ``name`` (None if it is)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    low, high, strict = meta.get("low"), meta.get("high"), meta.get("strict")

    def number_ok(v, whole: bool) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral if whole else numbers.Real) or v != v:
            return False
        return (low is None or (v > low if strict else v >= low)) and (high is None or v <= high)

    rng = ("" if low is None else f" {'>' if strict else '>='} {low:g}") + ("" if high is None else f" and <= {high:g}")
    if origin is Literal:
        return None if value in args else "one of " + ", ".join(map(repr, args))
    if typ is bool:
        return None if isinstance(value, bool) else "True or False"
    if typ in (int, float):
        return None if number_ok(value, typ is int) else f"a {'whole ' if typ is int else ''}number{rng}"
    if origin is tuple:
        whole = args[0] is int
        ok = isinstance(value, (tuple, list)) and (
            len(value) == len(args) if Ellipsis not in args else len(value) >= 1) and all(
            number_ok(v, whole) for v in value)
        count = f"{len(args)}" if Ellipsis not in args else "one or more"
        return None if ok else f"{count} {'whole numbers' if whole else 'numbers'}{rng}"
    if origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) and number_ok(v, False) for k, v in value.items())
        return None if ok else "a mapping of names to numbers >= 0"
    return None


@dataclass
class SCGPCLConfig:
    """Everything needed to reproduce a run: four sections of options.

    Parameters
    ----------
    preprocess
        Gene selection and normalisation (:class:`PreprocessConfig`).
    model
        The network, the reconstruction loss and the losses' temperature (:class:`ModelConfig`).
    sampler
        Minibatches, subgraph sampling and feature masking (:class:`SamplerConfig`).
    train
        The optimisation schedule (:class:`TrainConfig`).
    """

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dictionaries (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SCGPCLConfig:
        """From :meth:`to_dict`'s output, also of earlier versions (renamed options are mapped).

        A configuration saved before training ran in rounds (no ``round_steps``)
        is read with ``round_steps=0`` and ``sample_cells=0``: rounds of one
        epoch on all cells, which is what it ran with. One saved before
        ``target_sum`` existed is read with ``target_sum=0`` (median scaling), and one saved before
        ``kmeans_pca_weight`` with ``kmeans_pca_weight=0`` (DEC started from k-means on the representation).
        One saved before ``choose_target_sum`` or ``min_round_steps`` existed is read with ``False`` and 1,
        what it ran with (both are on by default since 2026-12-05); one saved before ``lambda_ins_cells``
        with 0 (the instance loss never scaled), one saved before ``lambda_ins_power`` with 1 (linear), and one
        saved before ``min_minibatches`` with 0 (every minibatch ``batch_size`` cells).

        Also reads the complete configuration that :func:`scgpcl.tl.cluster` records in
        ``uns[key]['params']['config']``, as flat ``"section.option"`` keys (arrays, as an ``.h5ad`` gives them
        back, become tuples). A key that is neither a section nor ``section.option`` is an error, not ignored.
        Options left out are read as a configuration of an earlier version would be (above); to change a few
        options of the defaults, use ``recommended().override(...)``.
        """
        d = _nested(d)
        sections = {}
        for name, kind in _SECTIONS.items():
            values = {_RENAMED.get(k, k): _plain(v) for k, v in (d.get(name) or {}).items()}
            if name == "train" and values.get("prototypes") == "epoch":
                values["prototypes"] = "round"
            if name == "preprocess" and d.get("preprocess") is not None and "target_sum" not in d["preprocess"]:
                values.setdefault("target_sum", 0.0)  # saved before the option existed: median scaling
            if name == "preprocess" and d.get("preprocess") is not None:
                values.setdefault("choose_target_sum", False)  # saved before the option: no choice was made
            if name == "sampler" and d.get("sampler") is not None:
                values.setdefault("min_minibatches", 0)  # saved before the option: every minibatch batch_size
            if name == "train" and d.get("train") is not None:
                values.setdefault("min_round_steps", 1)  # saved before the option: rounds of at most one epoch
                values.setdefault("lambda_ins_cells", 0)  # saved before the option: the loss never scaled
                values.setdefault("lambda_ins_power", 1.0)  # saved before the option: scaled linearly if at all
            if name == "train" and d.get("train") is not None and "kmeans_pca_weight" not in d["train"]:
                values.setdefault("kmeans_pca_weight", 0.0)  # saved before the option: k-means on z alone
                values.setdefault("dec_pca_target", False)
            if name == "train" and d.get("train") is not None and "round_steps" not in d["train"]:
                values.setdefault("round_steps", 0)
                values.setdefault("sample_cells", 0)
            for gone, no_effect in _REMOVED.get(name, {}).items():
                if gone in values:
                    if values[gone] != no_effect:
                        raise OtherVersionError(
                            f"it was trained with {gone}={values[gone]!r}, an option of an earlier scgpcl version "
                            "that this one no longer has")
                    del values[gone]
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise OtherVersionError(f"unknown {kind.__name__} option(s): {sorted(unknown)}")
            sections[name] = kind(**values)
        return cls(**sections)

    def validate(self) -> SCGPCLConfig:
        """Check every value against its field's type and range; raise ``ValueError`` naming each bad option.

        Returns ``self``.
        """
        problems = []
        for section, f, typ in option_fields():
            value = getattr(getattr(self, section), f.name)
            why = _check(f.name, value, typ, f.metadata)
            if why:
                problems.append(f"{f.name}={value!r} ({why})")
        t = self.train
        if not problems and t.lambda_proto > 0 and t.prototypes == "round" and t.warmup_rounds >= t.pretrain_rounds:
            problems.append(
                f"warmup_rounds={t.warmup_rounds} >= pretrain_rounds={t.pretrain_rounds} (the prototypical loss "
                "would never run; make the warm-up shorter, or set lambda_proto=0 to train without it)")
        pre = self.preprocess
        if not problems and pre.choose_target_sum and pre.target_sum not in TARGET_SUM_CANDIDATES:
            problems.append(
                f"target_sum={pre.target_sum:g} with choose_target_sum=True (the choice is between "
                f"{' and '.join(f'{t:g}' for t in TARGET_SUM_CANDIDATES)} and would discard it; drop one of the two)")
        if problems:
            raise ValueError("invalid option value(s): " + "; ".join(problems))
        return self

    def override(self, **kwargs: Any) -> SCGPCLConfig:
        """Return a copy with flat keyword overrides (``lr=1e-3``) applied.

        Each name must belong to exactly one section; an unknown name is an
        error. Names of earlier versions (``pretrain_epochs``) are accepted.
        ``target_sum`` without ``choose_target_sum`` also sets
        ``choose_target_sum=False``: a scaling asked for is the one used.
        """
        d = self.to_dict()
        kwargs = {_RENAMED.get(k, k): v for k, v in kwargs.items()}
        if "target_sum" in kwargs and "choose_target_sum" not in kwargs:
            kwargs["choose_target_sum"] = False  # an explicit cell scaling is not to be replaced by the choice
        for key, value in kwargs.items():
            sections = [s for s in d if key in d[s]]
            if not sections:
                close = difflib.get_close_matches(key, [k for section in d.values() for k in section], n=1)
                hint = (f": {_FOREIGN[key]}" if key in _FOREIGN else f"; did you mean {close[0]!r}?" if close
                        else "; every option is a field of scgpcl.recommended()")
                raise ValueError(f"unknown option {key!r}{hint}")
            d[sections[0]][key] = value
        return SCGPCLConfig.from_dict(d)


def multi_process_problem(train: TrainConfig) -> str | None:
    """Why ``train`` cannot run over several processes (None if it can)."""
    if train.kmeans_select != "inertia":
        return (f"kmeans_select={train.kmeans_select!r} is not available with several processes (k-means there "
                "runs Lloyd's iterations over the processes' rows and keeps the lowest inertia); use "
                "kmeans_select='inertia' (the default) or one process")
    return None


def recommended() -> SCGPCLConfig:
    """The project's recommended settings: the package default.

    - A round is at most ``round_steps`` optimizer steps and the global steps
      use at most ``sample_cells`` cells, so training cost is bounded however
      many cells there are (``benchmarks/results/scale.md``).
    - Learning rate 1e-3, a 10-round warm-up, at most 25 pre-training and 20
      fine-tuning rounds, 5 k-means restarts per round. After one to five
      rounds the representation clusters as well as after 40 (k-means ARI per
      round on six datasets, ``benchmarks/results/schedule.md``), so the
      schedule of the earlier `fast` preset (30-round warm-up, up to 100 + 100
      rounds) cost three times the steps for no measured gain.
    - ``convergence_patience=5``: pre-training also stops once the
      consecutive-round ARI has not improved for 5 rounds; with fresh k-means
      restarts the reference's 0.99 rule rarely fires
      (``benchmarks/results/stopping.md``).
    - ``finetune_keep_clusters``: fine-tuning stops before a round that would
      leave a cluster without cells.
    - ``kmeans_pca_weight=0.5`` with ``dec_pca_target``: DEC starts from k-means on the representation
      joined with the input features' principal components and keeps its target there; +0.021 ± 0.013
      ARI over 13 datasets x 3 seeds, steadier across seeds (``benchmarks/results/accuracy.md``,
      ``hybrid.md``).
    - ``gene_selection="seurat"`` (2000 genes by dispersion) instead of the
      reference's top 20 % by raw-count variance, which favours a few very
      highly expressed genes (``benchmarks/results/gene_selection.md``).
    - ``choose_target_sum`` with ``min_round_steps=5``: the cell scaling is
      chosen per dataset (median scaling or 10,000 counts, by the k-means
      silhouette on a sample's principal components), and data with fewer
      than five minibatches train at least five steps per round. +0.012 ±
      0.011 ARI over 13 datasets x 3 seeds at +32 % CPU, 19 of 20 Splatter
      settings within 0.05 of PCA + k-means (15 before) and 4 of 4 R-Splatter
      files (1 before) (``benchmarks/results/accuracy.md``, ``sweep.md``).
    - ``lambda_ins_cells=768`` with ``lambda_ins_power=4``: on data under 768
      cells the instance-wise loss weighs (cells / 768) ** 4 (0.18 at 500
      cells, 0.04 at 350), since on a few hundred cells it separates every
      cell without learning the types. On the 13 datasets cut to 25 cells per
      type (75-375 cells) +0.228 ARI over the unscaled loss at the first
      version, (cells / 512) ** 2; the second, on fresh draws of 35 cells per
      type (105-525 cells), +0.070 ± 0.035 over the first; on the 13
      themselves about level (only the three under 768 cells change)
      (``benchmarks/results/few_cells.md``, ``few_cells_35.md``).
    """
    return SCGPCLConfig()


def fast() -> SCGPCLConfig:
    """The recommended settings (:func:`recommended`) under the name they had before they became the default."""
    return recommended()


def faithful() -> SCGPCLConfig:
    """The reference implementation's settings (docs/method.md sections 1-6).

    Rounds of one epoch on all cells (so its cost grows with the cells),
    learning rate 1e-4, at most 200 pre-training epochs of which the first
    100 are the warm-up, at most 200 fine-tuning epochs, 20 k-means restarts
    per epoch, the 0.99 convergence rule alone, and the top 20 % of genes by
    raw-count variance. Slower; run with 0.1.0's code it was less accurate
    than today's defaults on 3 of the 4 Table 1 stand-ins and level on the
    fourth (``benchmarks/results/real.md``).
    """
    return SCGPCLConfig().override(
        round_steps=0, sample_cells=0, lr=1e-4, pretrain_rounds=200, warmup_rounds=100, finetune_rounds=200,
        kmeans_n_init_round=20, convergence_patience=0, gene_selection="variance", finetune_keep_clusters=False,
        target_sum=0.0, choose_target_sum=False, min_round_steps=1, kmeans_pca_weight=0.0, dec_pca_target=False,
        lambda_ins_cells=0,
    )


#: Named presets (CLI ``--preset``); ``fast`` is the recommended settings' former name.
PRESETS = {"default": recommended, "faithful": faithful, "fast": fast}
