"""Fixtures for unit tests: small kernel file trees in tmp_path (tests/trees.py)."""

from __future__ import annotations

import pytest

from tests.trees import Tree, hybrid_host, v2_host as make_v2_host


@pytest.fixture
def tree(tmp_path) -> Tree:
    return Tree(str(tmp_path))


@pytest.fixture
def v1_host(tree) -> Tree:
    return hybrid_host(tree)


@pytest.fixture
def v2_host(tree) -> Tree:
    return make_v2_host(tree)
