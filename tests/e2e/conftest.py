"""Fixtures of the whole-process tests."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from angora_testkit import Make, systems


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[Make]:
    """Factory: write definitions, start a matcher and N workers on the test's Redis; all stopped afterwards."""
    with systems(angora_env, tmp_path) as make:
        yield make
