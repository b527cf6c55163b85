"""Words in, words out: which colours and kinds a prompt names, and truthful sentences about
what the emulator saw."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from worker.emulator.palette import COLOUR_SYNONYMS, KIND_SYNONYMS
from worker.emulator.vision import ImageAnalysis, SeenShape

_WORD_RE = re.compile(r"[a-z]+")
_PLURAL = {"rectangle": "rectangles", "circle": "circles", "ellipse": "ellipses",
           "triangle": "triangles", "shape": "shapes"}  # fmt: skip


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def mentioned_colours(text: str) -> set[str]:
    return {COLOUR_SYNONYMS[w] for w in words(text) if w in COLOUR_SYNONYMS}


def mentioned_kinds(text: str) -> set[str]:
    return {KIND_SYNONYMS[w] for w in words(text) if w in KIND_SYNONYMS}


def select_shapes(
    shapes: Iterable[SeenShape], colours: set[str], kinds: set[str]
) -> list[SeenShape]:
    """Shapes matching every named criterion; no words named means every shape."""
    return [
        s
        for s in shapes
        if (not colours or s.colour_name in colours) and (not kinds or s.kind in kinds)
    ]


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def join_words(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def thing_named(colours: set[str], kinds: set[str], count: int = 1) -> str:
    """`red circle`, `circles`, `shapes`: the thing a question asks about, in number."""
    kind = next(iter(kinds)) if len(kinds) == 1 else "shape"
    noun = kind if count == 1 else _PLURAL.get(kind, kind + "s")
    return " ".join([*sorted(colours), noun])


def plural_phrase(count: int, colours: set[str], kinds: set[str]) -> str:
    """`3 red circles`, `1 shape`: the thing counted, as the question named it."""
    return f"{count} {thing_named(colours, kinds, count)}"


def caption(analysis: ImageAnalysis) -> str:
    shapes = analysis.shapes
    background = analysis.background_name
    if not shapes:
        return f"A plain {background} image with no distinct shapes."
    things = join_words([with_article(s.label) for s in shapes])
    noun = "shape" if len(shapes) == 1 else "shapes"
    return (
        f"{with_article(background).capitalize()} background with {len(shapes)} {noun}: {things}."
    )


def position_phrase(shape: SeenShape) -> str:
    x_min, y_min, x_max, y_max = shape.box_xyxy_norm
    x_mid, y_mid = (x_min + x_max) / 2, (y_min + y_max) / 2
    vertical = "top" if y_mid < 1 / 3 else "bottom" if y_mid > 2 / 3 else "middle"
    horizontal = "left" if x_mid < 1 / 3 else "right" if x_mid > 2 / 3 else "centre"
    if vertical == "middle" and horizontal == "centre":
        return "in the centre"
    if vertical == "middle":
        return f"in the middle {horizontal}"
    if horizontal == "centre":
        return f"at the {vertical} centre"
    return f"in the {vertical} {horizontal}"
