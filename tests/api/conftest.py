"""Every API test runs once per backend (ids ``sqlite`` and ``postgres``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _each_backend(on_backend: str) -> str:
    return on_backend
