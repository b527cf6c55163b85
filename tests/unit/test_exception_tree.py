"""The exception tree is drawn once, in tasks/errors.py's docstring; the drawing must be
the classes: every class of the tree in it, under its parent, with its error code."""

from __future__ import annotations

import inspect
import re

import tasks.errors as errors
from tasks.errors import GvwError

# a line of the drawing: the tree glyphs, a class name, and its code when the line gives one
LINE = re.compile(
    r"^(?P<indent>[ │├└─]*?)(?:[├└]── )?(?P<name>[A-Z]\w+)(?:\s+(?P<code>internal|[a-z]+(?:_[a-z]+)+)\b)?"
)


def drawn() -> dict[str, tuple[str | None, str | None]]:
    """name -> (parent, code) as the docstring draws them."""
    doc = inspect.getdoc(errors) or ""
    block = [line for line in doc.splitlines() if "GvwError" in line or "──" in line]
    stack: list[tuple[int, str]] = []
    found: dict[str, tuple[str | None, str | None]] = {}
    for line in block:
        match = LINE.match(line.strip("\n"))
        assert match, line
        name = match.group("name")
        depth = line.index(name)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        found[name] = (stack[-1][1] if stack else None, match.group("code"))
        stack.append((depth, name))
    return found


def classes() -> dict[str, type[GvwError]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, GvwError)
    }


def test_every_class_of_the_tree_is_drawn_and_nothing_else() -> None:
    assert set(drawn()) == set(classes())


def test_each_class_is_drawn_under_its_parent() -> None:
    tree = drawn()
    for name, cls in classes().items():
        parent = cls.__bases__[0].__name__ if cls is not GvwError else None
        assert tree[name][0] == parent, name


# the branches: their subclasses carry the codes
BRANCHES = {"GvwError", "PermanentError", "RetryableError", "DependencyUnavailable"}


def test_each_class_is_drawn_with_its_code() -> None:
    tree = drawn()
    for name, cls in classes().items():
        code = tree[name][1]
        if name not in BRANCHES:
            assert code == cls.code, name


def test_a_class_left_out_of_the_drawing_is_noticed() -> None:
    # the check itself: a class the drawing forgets is not silently accepted
    class Forgotten(errors.RetryableError):
        code = "internal"

    setattr(errors, "Forgotten", Forgotten)  # noqa: B010
    try:
        assert set(drawn()) != set(classes())
    finally:
        delattr(errors, "Forgotten")
