"""Sphinx configuration of the scgpcl documentation.

Build (warnings are errors, as in CI):

    pip install -e ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from datetime import date
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

# -- Project ---------------------------------------------------------------
project = "scgpcl"
author = "the scgpcl developers"
copyright = f"{date.today().year}, {author}"
release = _version("scgpcl")
version = release

# -- General ---------------------------------------------------------------
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "cli_help",  # docs/_ext/cli_help.py: the `scgpcl ... --help` texts, taken from the parser itself
    "config_fields",  # docs/_ext/config_fields.py: each config option's help (field metadata) in the API pages
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
master_doc = "index"
templates_path = ["_templates"]
# the output folder may sit inside docs/, and a virtual environment may sit anywhere
exclude_patterns = [
    "_build",
    "**/.venv",
    ".venv",
    "**/.ipynb_checkpoints",
    "**/.pytest_cache",
    "Thumbs.db",
    ".DS_Store",
]

# -- MyST --------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "amsmath", "attrs_inline"]
myst_heading_anchors = 3  # links such as method.md#5-losses

# -- API reference (autodoc / autosummary / napoleon) ------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # parameter types listed under "Parameters", also where the docstring has none
autodoc_typehints_format = "short"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_use_ivar = True
# napoleon escapes the trailing underscore of fitted attributes (labels_, embedding_) only with this
# set; without it docutils reads `labels_` as a link target and prints "labels"
strip_signature_backslash = True

# no intersphinx: CI has no network besides the package registries, and a failed
# inventory fetch would be a warning, i.e. an error under -W

# -- HTML ------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"scgpcl {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_show_sourcelink = False


# -- Docstring adjustments ----------------------------------------------------


_ATTRIBUTE_TEXT: dict[str, list[str]] = {}


def _keep_attribute_text(app, what, name, obj, options, lines):
    """Attribute comments are plain reST: undo napoleon's reading of them (runs before and after it).

    Napoleon takes ``Text before a colon: rest`` on an attribute's first line as
    ``type: description``, which turned the config fields' ``#:`` comments (e.g.
    ``Neighbour cap of the minibatch views: a node aggregates ...``) into a bogus
    type. The annotations already give the types.
    """
    if what != "attribute":
        return
    if name not in _ATTRIBUTE_TEXT:
        _ATTRIBUTE_TEXT[name] = list(lines)
    else:
        lines[:] = _ATTRIBUTE_TEXT.pop(name)


def _skip_undocumented_property(app, what, name, obj, skip, options):
    """``:undoc-members:`` lists the config fields without comments; not undocumented properties."""
    if isinstance(obj, property) and not obj.__doc__:
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _keep_attribute_text, priority=400)  # napoleon runs at 500
    app.connect("autodoc-process-docstring", _keep_attribute_text, priority=600)
    app.connect("autodoc-skip-member", _skip_undocumented_property)
