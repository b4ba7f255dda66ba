"""The structure the architecture promises (docs/architecture.md), checked mechanically."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "scgpcl"


def _functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_training_function_is_longer_than_60_lines():
    long = [f"{p.name}:{name} ({n} lines)" for p in sorted((SRC / "train").glob("*.py"))
            for name, _, n in _functions(p) if n > 60]
    assert not long, long


def test_the_trainer_prepares_no_data():
    """Graph, sampling, batching, size factors and the ZINB constant belong to the data layer."""
    text = (SRC / "train" / "_trainer.py").read_text()
    for name in ("scipy", "lgamma", "size_factors", "CellGeneGraph", "NeighborSampler", "randperm"):
        assert name not in text, name


def test_config_choices_are_the_registries_keys():
    """The configuration names its choices as Literal types (it imports nothing above it); each registry that
    implements them is keyed by the same names, so a new entry cannot fail late or be called unknown."""
    import typing

    from scgpcl._config import ModelConfig, TrainConfig
    from scgpcl.data._checks import _COUNT_LOSSES, _OTHER_LOSSES
    from scgpcl.module._network import ACTIVATIONS, ENCODERS
    from scgpcl.module._objective import RECONSTRUCTIONS
    from scgpcl.train._auto_k import METHODS

    def choices(kind, name):
        return set(typing.get_args(typing.get_type_hints(kind)[name]))

    assert choices(ModelConfig, "encoder") == set(ENCODERS)
    assert choices(ModelConfig, "encoder_activation") == set(ACTIVATIONS)
    assert choices(ModelConfig, "reconstruction") == set(RECONSTRUCTIONS) == _COUNT_LOSSES | _OTHER_LOSSES
    assert choices(TrainConfig, "auto_k_method") == set(METHODS)
