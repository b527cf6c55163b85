"""Shared test fixtures.

The real Gemini outputs are kept verbatim in the repo, with their manifest, under
``tests/fixtures/gemini_real/``: a clone needs nothing beside it to run its tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

GEMINI_REAL = Path(__file__).resolve().parent / "fixtures" / "gemini_real"


@pytest.fixture(scope="session")
def gemini_real() -> Path:
    """The folder of verbatim Gemini outputs (``fixtures/gemini_real/``)."""
    if not GEMINI_REAL.is_dir():
        pytest.fail(f"real Gemini fixtures not found at {GEMINI_REAL}")
    return GEMINI_REAL
