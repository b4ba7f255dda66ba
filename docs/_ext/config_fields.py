"""The help of each option in the API reference of the config dataclasses.

Every option of :class:`scgpcl.TrainConfig` and its siblings is a dataclass
field whose ``metadata["help"]`` is the one description of that option (the
command line's ``--help`` is generated from it too). autodoc shows a
dataclass's fields but not their metadata, so this extension adds, for each
class documented by autodoc, a ``:param name: help`` entry per field that has
a help text; autodoc then adds the field's type (``autodoc_typehints =
"description"``). Writing the same text again in the docstrings would let the
two drift apart.
"""

from __future__ import annotations

import dataclasses
import re

_SPECIAL = re.compile(r"([*`|\\])")


def _rst(text: str) -> str:
    """The help text as plain reST: characters with a meaning in reST escaped."""
    return _SPECIAL.sub(r"\\\1", " ".join(text.split()))


def add_field_help(app, what, name, obj, options, lines) -> None:
    if what != "class" or not dataclasses.is_dataclass(obj):
        return
    documented = {m.group(1) for line in lines if (m := re.match(r"\s*:param (\w+):", line))}
    entries = [f":param {f.name}: {_rst(f.metadata['help'])}" for f in dataclasses.fields(obj)
               if f.metadata.get("help") and f.name not in documented]
    if entries:
        lines += ["", *entries]


def setup(app):
    # after napoleon (priority 500): a Parameters section written in the docstring is then already a list of
    # ``:param name:`` fields, which these entries join (and do not repeat)
    app.connect("autodoc-process-docstring", add_field_help, priority=600)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
