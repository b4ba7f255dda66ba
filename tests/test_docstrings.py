"""Every public object has a numpydoc docstring (ruff's pydocstyle rules check the form; ruff skips objects
defined in private modules, so this test checks that each name a public package exports is documented)."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC = ["scgpcl", "scgpcl.tl", "scgpcl.pl", "scgpcl.data", "scgpcl.module", "scgpcl.train", "scgpcl.model",
          "scgpcl.sklearn", "scgpcl.report", "scgpcl.simulate", "scgpcl.metrics"]


def _exported():
    for mod_name in PUBLIC:
        mod = importlib.import_module(mod_name)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            yield f"{mod_name}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, (property, classmethod, staticmethod))):
                        continue
                    yield f"{mod_name}.{name}.{attr}", member


def _params(obj) -> list[str]:
    fn = obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj
    if isinstance(fn, property) or not callable(fn):
        return []
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters if p not in ("self", "cls") and not p.startswith("_")
            and sig.parameters[p].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _doc(obj) -> str:
    target = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
    return inspect.getdoc(target) or ""


OBJECTS = dict(_exported())


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_public_object_has_a_docstring(name):
    assert _doc(OBJECTS[name]).strip(), f"{name} has no docstring"


@pytest.mark.parametrize("name", sorted(n for n, o in OBJECTS.items() if inspect.isfunction(o) and len(_params(o)) > 1))
def test_public_function_documents_its_parameters(name):
    """A function with more than one parameter has a numpydoc Parameters section naming each of them."""
    obj = OBJECTS[name]
    doc = _doc(obj)
    assert "Parameters\n----------" in doc, f"{name}: no Parameters section"
    missing = [p for p in _params(obj) if p not in doc]
    assert not missing, f"{name}: parameters not described: {missing}"
