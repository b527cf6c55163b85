"""tasks.registry: adding a task is adding a module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks import registry
from tasks.errors import InvalidJob

CONTRACT_TASKS_HERE = {"caption", "vqa", "classify", "detect", "custom"}


def test_the_task_modules_are_registered() -> None:
    assert set(registry.task_names()) >= CONTRACT_TASKS_HERE
    assert list(registry.task_names()) == sorted(registry.task_names())


@pytest.mark.parametrize("name", sorted(CONTRACT_TASKS_HERE))
def test_get_task_by_name(name: str) -> None:
    task = registry.get_task(name)
    assert task.name == name
    assert 1 <= task.min_images <= task.max_images <= 3600


@pytest.mark.parametrize("name", ["nope", "", "Detect", None])
def test_unknown_task_names_the_allowed_ones(name: object) -> None:
    with pytest.raises(InvalidJob) as caught:
        registry.get_task(name)  # type: ignore[arg-type]
    assert "allowed: " in caught.value.message
    for known in CONTRACT_TASKS_HERE:
        assert known in caught.value.message
    assert caught.value.details["field"] == "task"


@pytest.fixture
def fake_package(tmp_path: Path) -> Iterator[Path]:
    package = tmp_path / "fake_tasks_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        yield package
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.startswith("fake_tasks_pkg")]:
            del sys.modules[module]


TASK_MODULE = """
class _Task:
    name = {name!r}
    min_images = 1
    max_images = 1

TASK = _Task()
"""


def test_a_module_with_task_is_discovered(fake_package: Path) -> None:
    (fake_package / "shiny.py").write_text(TASK_MODULE.format(name="shiny"))
    (fake_package / "helpers.py").write_text("VALUE = 1\n")  # no TASK: not a task
    (fake_package / "_private.py").write_text(TASK_MODULE.format(name="hidden"))
    found = registry.discover_tasks(importlib.import_module("fake_tasks_pkg"))
    assert list(found) == ["shiny"]


def test_two_modules_with_one_name_is_a_packaging_bug(fake_package: Path) -> None:
    (fake_package / "one.py").write_text(TASK_MODULE.format(name="same"))
    (fake_package / "two.py").write_text(TASK_MODULE.format(name="same"))
    with pytest.raises(RuntimeError, match="defined twice"):
        registry.discover_tasks(importlib.import_module("fake_tasks_pkg"))
