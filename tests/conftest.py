"""Shared test fixtures.

The real Gemini outputs live in the project's shared folder, which sits beside the repo
(CI clones the repo with ``shared/`` beside it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

# this file is tests/conftest.py: parents[1] is the repo, its parent holds shared/
GEMINI_REAL = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "gemini_real"


@pytest.fixture(scope="session")
def gemini_real() -> Path:
    """The folder of verbatim Gemini outputs (``fixtures/gemini_real/``)."""
    if not GEMINI_REAL.is_dir():
        pytest.fail(f"real Gemini fixtures not found at {GEMINI_REAL} (shared/ beside the repo)")
    return GEMINI_REAL
