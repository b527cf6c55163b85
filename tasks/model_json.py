"""JSON out of model text.

Gemini is asked for bare JSON, yet real answers (``fixtures/gemini_real/``) wrap it in a
code fence (often with no newline after the closing fence), add prose before or after it,
wrap a list in an object (``{"boxes": [...]}``) or end mid-item when the output-token limit
cuts a runaway list. This module finds the JSON in all of those; it never guesses beyond
them, and it never turns unreadable text into an empty answer:

- `extract_json(text)` returns the one complete JSON value the text holds, or raises
  `ModelOutputInvalid` (raw text kept), also when the JSON was cut off.
- `extract_item_list(text)` returns the list the text holds (unwrapping a wrapper object);
  from a cut-off list it salvages the complete items and says so (`ItemList.truncated`).

How the value is found, in order: the whole text as JSON; the body of each code fence as
JSON; then a scan of every ``[`` / ``{`` with `json.JSONDecoder.raw_decode`, keeping the
longest value found. A bracketed span that does not decode is prose and is skipped whole.
An opening bracket that is never closed (string-aware bracket matching) marks a truncated
value; it wins if it is longer than every complete one. The scan is linear in the text,
so a degenerate answer cannot stall a worker. NaN and Infinity are not JSON here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from tasks.errors import ModelOutputInvalid

__all__ = ["ItemList", "extract_item_list", "extract_json"]


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON; accepting them would let a NaN slip into a box or
    # a schema-checked "number" downstream.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_WHITESPACE = " \t\n\r"
# the characters that matter to bracket matching: brackets, and the string delimiters
_BRACKET_OR_STRING = re.compile(r'[\[\]{}"\\]')
_OPENING = re.compile(r"[\[{]")
_CLOSER = {"[": "]", "{": "}"}
_FENCE = "```"
_FENCE_INFO = re.compile(r"[A-Za-z0-9_+.-]*[ \t]*\r?\n?")


@dataclass(frozen=True)
class ItemList:
    """The items of the JSON list in a model answer.

    ``truncated`` is True when the list was cut off (e.g. at MAX_TOKENS): ``items`` then
    holds only the complete items before the cut, and ``warnings`` says so. Callers must
    pass the warnings on; a cut list must never look like a complete answer.
    """

    items: list[Any]
    truncated: bool = False
    lone_object: bool = False
    """True when the answer was one JSON object where a list was asked for (seen in real
    answers): it is read as a list of that one item, and a warning says so."""

    @property
    def warnings(self) -> list[str]:
        warnings: list[str] = []
        if self.lone_object:
            warnings.append("model answered one JSON object, not a list; read it as one item")
        if self.truncated:
            warnings.append(
                "model output was cut off before its JSON list ended (truncated, e.g. at the "
                f"output-token limit); kept the {len(self.items)} complete items before the cut"
            )
        return warnings


def extract_json(text: str) -> Any:
    """The complete JSON value in ``text`` (fences and prose around it ignored).

    Raises ModelOutputInvalid (with ``raw_text``) when there is no JSON or when the JSON
    is cut off; use `extract_item_list` to salvage a cut-off list.
    """
    found = _locate(text)
    if isinstance(found, _Unterminated):
        raise ModelOutputInvalid(
            "model output is truncated JSON (it ends before the JSON value closes)",
            raw_text=text,
        )
    return found.value


def extract_item_list(text: str) -> ItemList:
    """The list in ``text``: a top-level list or the list inside a wrapper object.

    A wrapper object is an object with exactly one list-valued member, when it is its only
    member or when the list holds only objects/lists (so ``{"box_2d": [1, 2, 3, 4],
    "label": "x"}``, a lone item, is not mistaken for a wrapper of four numbers). Any
    other object is a lone item, read as a one-item list (``lone_object=True``): the
    caller's item checks decide whether it is usable.
    A cut-off list gives its complete items with ``truncated=True``; a cut-off list with
    no complete item, or JSON that is neither a list nor an object, raises
    ModelOutputInvalid.
    """
    found = _locate(text)
    if isinstance(found, _Complete):
        value = found.value
        if isinstance(value, dict) and _wrapped_list(value) is None:
            return ItemList(items=[value], lone_object=True)
        return ItemList(items=_as_list(value, text), truncated=False)
    items = _salvage_items(text, found.start)
    if not items:
        raise ModelOutputInvalid(
            "model output is a truncated JSON list with no complete item", raw_text=text
        )
    return ItemList(items=items, truncated=True)


# --- locating the value -------------------------------------------------------------


@dataclass(frozen=True)
class _Complete:
    value: Any
    length: int


@dataclass(frozen=True)
class _Unterminated:
    start: int  # index of the "[" or "{" that is never closed; it runs to the end


def _locate(text: str) -> _Complete | _Unterminated:
    if not text.strip():
        raise ModelOutputInvalid("model returned no text", raw_text=text)
    whole = _loads(text.strip())
    if whole is not None:
        return whole
    for body in _fence_bodies(text):
        fenced = _loads(body.strip())
        if fenced is not None:
            return fenced
    best: _Complete | _Unterminated | None = None
    best_length = 0
    for candidate in _scan(text):
        length = (
            candidate.length if isinstance(candidate, _Complete) else len(text) - candidate.start
        )
        if length > best_length:
            best, best_length = candidate, length
    if best is None:
        raise ModelOutputInvalid("model output holds no JSON", raw_text=text)
    return best


def _loads(text: str) -> _Complete | None:
    try:
        value, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    return _Complete(value, end) if end == len(text) else None


def _fence_bodies(text: str) -> Iterator[str]:
    """Bodies of ``` fences; an unclosed last fence (cut-off output) runs to the end."""
    position = 0
    while (open_at := text.find(_FENCE, position)) != -1:
        info = _FENCE_INFO.match(text, open_at + len(_FENCE))
        body_start = info.end() if info else open_at + len(_FENCE)
        close_at = text.find(_FENCE, body_start)
        if close_at == -1:
            yield text[body_start:]
            return
        yield text[body_start:close_at]
        position = close_at + len(_FENCE)


def _scan(text: str) -> Iterator[_Complete | _Unterminated]:
    """The outermost JSON objects/arrays in ``text``, then its first unclosed opening.

    Every character is looked at a bounded number of times, so a degenerate answer
    (thousands of brackets) cannot stall the worker.
    """
    position = 0
    dead: set[int] = set()  # openings known to meet a mismatched closer
    while opening := _OPENING.search(text, position):
        start = opening.start()
        position = start + 1
        if start in dead:
            continue
        span = _bracket_span(text, start)
        if isinstance(span, _Mismatched):
            # every opening still open there meets the same wrong closer
            dead.update(span.open_starts)
            continue
        if span is None:
            # it runs to the end of the text, so nothing after it can be longer
            yield _Unterminated(start)
            return
        # a balanced span that is not JSON is prose in brackets: skip all of it
        position = span + 1
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
        if end == position:
            yield _Complete(value, end - start)


@dataclass(frozen=True)
class _Mismatched:
    open_starts: list[int]


def _bracket_span(text: str, start: int) -> int | _Mismatched | None:
    """Index of the bracket closing ``text[start]`` (string-aware); None if never closed."""
    open_brackets: list[tuple[str, int]] = []  # (expected closer, where it opened)
    in_string = False
    skip_to = 0
    for match in _BRACKET_OR_STRING.finditer(text, start):
        at = match.start()
        if at < skip_to:
            continue  # the character escaped by a backslash
        char = match.group()
        if in_string:
            if char == "\\":
                skip_to = at + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _CLOSER:
            open_brackets.append((_CLOSER[char], at))
        elif char in "]}":
            if open_brackets[-1][0] != char:
                return _Mismatched([opened for _, opened in open_brackets])
            open_brackets.pop()
            if not open_brackets:
                return at
        # a backslash outside a string is not JSON; raw_decode will reject it
    return None


# --- lists: unwrapping and salvage --------------------------------------------------


def _wrapped_list(value: dict[str, Any]) -> list[Any] | None:
    """The list a wrapper object (``{"boxes": [...]}``) holds, or None if it is no wrapper."""
    lists = [member for member in value.values() if isinstance(member, list)]
    if len(lists) == 1 and (
        len(value) == 1 or all(isinstance(item, dict | list) for item in lists[0])
    ):
        return lists[0]
    return None


def _as_list(value: Any, text: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        wrapped = _wrapped_list(value)
        if wrapped is not None:
            return wrapped
        keys = ", ".join(repr(key) for key in list(value)[:10])
        raise ModelOutputInvalid(
            f"model output is a JSON object (keys {keys}), not a list", raw_text=text
        )
    raise ModelOutputInvalid(
        f"model output is a JSON {type(value).__name__}, not a list", raw_text=text
    )


def _salvage_items(text: str, start: int) -> list[Any]:
    """Complete items of the cut-off list that starts (or is wrapped) at ``text[start]``."""
    list_start = start if text[start] == "[" else _list_start_in_cut_object(text, start)
    if list_start is None:
        raise ModelOutputInvalid(
            "model output is a truncated JSON object that holds no list", raw_text=text
        )
    items: list[Any] = []
    position = list_start + 1
    while True:
        position = _skip_whitespace(text, position)
        try:
            item, end = _DECODER.raw_decode(text, position)
        except (ValueError, RecursionError):
            return items  # the cut fell inside this item (or before it)
        after = _skip_whitespace(text, end)
        if after >= len(text) and isinstance(item, int | float) and not isinstance(item, bool):
            return items  # a number that ends at the cut may have lost digits
        items.append(item)
        if after >= len(text) or text[after] != ",":
            return items
        position = after + 1


def _list_start_in_cut_object(text: str, start: int) -> int | None:
    """Where the cut-off list inside the cut-off object at ``start`` begins, if any."""
    position = start + 1
    while True:
        position = _skip_whitespace(text, position)
        try:
            key, position = _DECODER.raw_decode(text, position)
        except (ValueError, RecursionError):
            return None
        position = _skip_whitespace(text, position)
        if not isinstance(key, str) or not text.startswith(":", position):
            return None
        position = _skip_whitespace(text, position + 1)
        try:
            _, position = _DECODER.raw_decode(text, position)
        except (ValueError, RecursionError):
            # this member's value is the one the cut fell in
            return position if text.startswith("[", position) else None
        position = _skip_whitespace(text, position)
        if not text.startswith(",", position):
            return None
        position += 1


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in _WHITESPACE:
        position += 1
    return position
