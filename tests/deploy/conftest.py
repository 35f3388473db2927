"""Fixtures for the deployment tests; the loaders themselves are in manifests.py."""

from __future__ import annotations

import pytest

from deploy.manifests import Instruction, get_routes, parse_dockerfile


@pytest.fixture(scope="session")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile()


@pytest.fixture(scope="session")
def get_paths() -> set[str]:
    """Paths the real app serves with GET."""
    return get_routes()
