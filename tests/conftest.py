"""Shared pytest fixtures: paths to the bundled test data."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return DATA / "reference"


@pytest.fixture(scope="session")
def totalseg_dir() -> Path:
    return DATA / "totalsegmentator"
