"""Fixtures shared by the tests (data and settings live in helpers.py)."""

from __future__ import annotations

import pytest

from helpers import toy_counts


@pytest.fixture(scope="module")
def toy():
    """180 cells x 150 genes of negative-binomial counts in three groups (obs['cell_type'])."""
    return toy_counts()
