"""Generation options per model family.

Model names change every few months; the knobs differ by family (2.5 takes
`thinking_budget`, 3.x takes `thinking_level` and answers 400 when given both; 2.5 Pro
cannot turn thinking off). Every such choice is made here, from a table, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.errors import InvalidJob


@dataclass(frozen=True)
class ModelFamily:
    name: str
    prefixes: tuple[str, ...]
    thinking_knob: str | None  # "budget", "level" or None (no thinking config at all)
    # What a spatial task (boxes, masks) asks for: the guide advises no thinking on 2.5.
    spatial_thinking_budget: int | None = None
    spatial_thinking_level: str | None = None
    min_thinking_budget: int = 0
    supports_segmentation: bool = True
    # media_resolution: Gemini 3 and later take it per image part (and `ultra_high`);
    # every other multimodal model takes it for the whole request only
    media_resolution_per_part: bool = False


# Longest prefix wins; order here is for reading only.
FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        "gemini-3",
        ("gemini-3",),
        "level",
        spatial_thinking_level="LOW",
        supports_segmentation=False,
        media_resolution_per_part=True,
    ),
    # Pro cannot disable thinking: its smallest budget is 128.
    ModelFamily(
        "gemini-2.5-pro",
        ("gemini-2.5-pro",),
        "budget",
        spatial_thinking_budget=128,
        min_thinking_budget=128,
    ),
    ModelFamily("gemini-2.5", ("gemini-2.5",), "budget", spatial_thinking_budget=0),
    ModelFamily("gemini-2.0", ("gemini-2.0",), None),
    ModelFamily("gemini-1.5", ("gemini-1.5",), None),
)
# Unknown names (aliases such as gemini-flash-latest, tuned models) get no thinking
# config: the one choice every family accepts.
UNKNOWN = ModelFamily("unknown", (), None)


def family_of(model: str) -> ModelFamily:
    bare = model.removeprefix("models/").lower()
    best, best_len = UNKNOWN, -1
    for family in FAMILIES:
        for prefix in family.prefixes:
            if bare.startswith(prefix) and len(prefix) > best_len:
                best, best_len = family, len(prefix)
    return best


@dataclass(frozen=True)
class ThinkingChoice:
    budget: int | None = None
    level: str | None = None


def thinking_for(model: str, *, spatial: bool, requested_budget: int | None) -> ThinkingChoice:
    """The thinking config to send, given the task and the job's `thinking_budget` option.

    A job's explicit budget wins where the family has budgets (raised to the family's
    minimum); on level families a budget of 0 maps to the lowest level and any other
    budget is left to the model, because sending a budget there is a 400.
    """
    family = family_of(model)
    if family.thinking_knob == "budget":
        if requested_budget is not None:
            if requested_budget == -1:
                return ThinkingChoice(budget=-1)
            return ThinkingChoice(budget=max(requested_budget, family.min_thinking_budget))
        if spatial and family.spatial_thinking_budget is not None:
            return ThinkingChoice(budget=family.spatial_thinking_budget)
        return ThinkingChoice()
    if family.thinking_knob == "level":
        if requested_budget == 0 or (requested_budget is None and spatial):
            return ThinkingChoice(level=family.spatial_thinking_level or "LOW")
        return ThinkingChoice()
    return ThinkingChoice()


MEDIA_RESOLUTIONS = ("low", "medium", "high", "ultra_high")


@dataclass(frozen=True)
class MediaResolutionChoice:
    """Where a job's `media_resolution` goes: on each image part, or on the request.
    Values are the API's enum names (``MEDIA_RESOLUTION_LOW``, ...)."""

    per_part: str | None = None
    request: str | None = None


def media_resolution_for(model: str, level: str | None) -> MediaResolutionChoice:
    """How to send `level` to `model`. Raises InvalidJob for ``ultra_high`` on a model
    that only takes a request-wide resolution (the request-wide enum has no such level)."""
    if level is None:
        return MediaResolutionChoice()
    if level not in MEDIA_RESOLUTIONS:
        raise InvalidJob(
            f"media_resolution must be one of {', '.join(MEDIA_RESOLUTIONS)}",
            field="options.media_resolution",
        )
    enum_name = f"MEDIA_RESOLUTION_{level.upper()}"
    if family_of(model).media_resolution_per_part:
        return MediaResolutionChoice(per_part=enum_name)
    if level == "ultra_high":
        raise InvalidJob(
            f"media_resolution ultra_high needs a Gemini 3 or later model, not {model[:200]!r}",
            field="options.media_resolution",
        )
    return MediaResolutionChoice(request=enum_name)
