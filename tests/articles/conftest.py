"""Fixtures of the article tests; the helpers are in articles_support.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from articles_support import Ports


@pytest.fixture
def ports() -> Ports:
    return Ports()


@pytest.fixture(scope="module")
def module_ports() -> Ports:
    return Ports()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The article's project folder (one per test module)."""
    yield tmp_path_factory.mktemp("project")
