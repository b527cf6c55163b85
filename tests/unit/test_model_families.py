from __future__ import annotations

import pytest

from tasks.model_families import ThinkingChoice, family_of, thinking_for


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gemini-2.5-flash", "gemini-2.5"),
        ("models/gemini-2.5-flash-lite", "gemini-2.5"),
        ("gemini-2.5-pro-exp-03-25", "gemini-2.5-pro"),
        ("gemini-3-flash-preview", "gemini-3"),
        ("gemini-2.0-flash", "gemini-2.0"),
        ("gemini-flash-latest", "unknown"),
    ],
)
def test_family_by_longest_prefix(model: str, family: str) -> None:
    assert family_of(model).name == family


@pytest.mark.parametrize(
    ("model", "spatial", "budget", "expected"),
    [
        pytest.param(
            "gemini-2.5-flash", True, None, ThinkingChoice(budget=0), id="2.5-detect-no-thinking"
        ),
        pytest.param("gemini-2.5-flash", False, None, ThinkingChoice(), id="2.5-caption-default"),
        pytest.param(
            "gemini-2.5-pro", True, None, ThinkingChoice(budget=128), id="2.5-pro-cannot-disable"
        ),
        pytest.param(
            "gemini-2.5-pro", False, 0, ThinkingChoice(budget=128), id="2.5-pro-min-budget"
        ),
        pytest.param(
            "gemini-2.5-flash", True, 512, ThinkingChoice(budget=512), id="job-budget-wins"
        ),
        pytest.param(
            "gemini-3-flash-preview",
            True,
            None,
            ThinkingChoice(level="LOW"),
            id="3-level-not-budget",
        ),
        pytest.param(
            "gemini-3-flash-preview", False, 1024, ThinkingChoice(), id="3-never-gets-a-budget"
        ),
        pytest.param("gemini-2.0-flash", True, 0, ThinkingChoice(), id="2.0-no-thinking-config"),
    ],
)
def test_thinking_choice_per_family(
    model: str, spatial: bool, budget: int | None, expected: ThinkingChoice
) -> None:
    assert thinking_for(model, spatial=spatial, requested_budget=budget) == expected
