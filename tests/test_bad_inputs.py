"""tools/bad_inputs.py and docs/bad_inputs.md: every bad input the tests cover, refused with exit code 2."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from helpers import needs_zarr

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_zarr  # the tool's cases include .zarr stores


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "tools" / "bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bad_inputs"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page(tool):
    return tool.build()  # raises if a command-line case does not exit with 2, or a Python case raises no InputError


def test_every_test_of_a_bad_input_is_a_row_or_explained(tool, page):
    assert "NOT EXPLAINED" not in page and "Cited tests that do not exist" not in page
    cited = {t for c in tool.CASES for t in c.tests}
    assert len(tool.CASES) >= 60 and len(cited) >= 60


def test_every_error_is_one_line_naming_scgpcl(tool, page):
    for case in tool.CASES:
        assert case.exit == "2", case.what
        assert case.message.startswith(("scgpcl: error:", "scgpcl cluster: error:", "scgpcl markers: error:",
                                        "scgpcl simulate: error:")), (case.what, case.message)


def test_the_page_is_current(tool, page):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the page is generated on a machine without CUDA ('--device cuda:7' says so)")
    assert (ROOT / "docs" / "bad_inputs.md").read_text() == page, (
        "run: python tools/bad_inputs.py (or the installed h5py, scipy or zarr word their errors other than the "
        "versions the page was made with, those .ci/run installs)")
