from __future__ import annotations

import pytest

from tasks.errors import InvalidJob
from tasks.model_families import ThinkingChoice, family_of, media_resolution_for, thinking_for


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


@pytest.mark.parametrize(
    ("model", "level", "per_part", "request_wide"),
    [
        ("gemini-3-flash-preview", "low", "MEDIA_RESOLUTION_LOW", None),
        ("gemini-3-pro-preview", "ultra_high", "MEDIA_RESOLUTION_ULTRA_HIGH", None),
        ("gemini-2.5-flash", "medium", None, "MEDIA_RESOLUTION_MEDIUM"),
        ("gemini-flash-latest", "high", None, "MEDIA_RESOLUTION_HIGH"),
        ("gemini-2.5-flash", None, None, None),
    ],
)
def test_media_resolution_goes_where_the_family_takes_it(
    model: str, level: str | None, per_part: str | None, request_wide: str | None
) -> None:
    choice = media_resolution_for(model, level)
    assert (choice.per_part, choice.request) == (per_part, request_wide)


def test_ultra_high_needs_gemini_3() -> None:
    with pytest.raises(InvalidJob, match="ultra_high needs a Gemini 3"):
        media_resolution_for("gemini-2.5-flash", "ultra_high")
