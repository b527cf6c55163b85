"""Task name -> VisionTask.

Adding a task is adding a module: any module of the `tasks` package with a module-level
``TASK`` is a task, registered under ``TASK.name``. The package is scanned on first use
(not at import time) and the result cached for the life of the process.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from functools import cache
from types import ModuleType

import tasks
from tasks.base import VisionTask
from tasks.errors import InvalidJob

__all__ = ["discover_tasks", "get_task", "task_names"]


def get_task(name: str) -> VisionTask:
    """The task called ``name``; InvalidJob naming the allowed tasks when there is none."""
    registered = _tasks_by_name()
    try:
        return registered[name]
    except (KeyError, TypeError):
        allowed = ", ".join(sorted(registered))
        raise InvalidJob(f"task: unknown task {name!r}; allowed: {allowed}", field="task") from None


def task_names() -> tuple[str, ...]:
    """Names of all registered tasks, sorted."""
    return tuple(sorted(_tasks_by_name()))


def discover_tasks(package: ModuleType) -> dict[str, VisionTask]:
    """Every module-level ``TASK`` in ``package``'s modules, by ``TASK.name``.

    Modules whose name starts with ``_`` are skipped. Two modules claiming one name is a
    packaging bug, not a job error: RuntimeError.
    """
    found: dict[str, VisionTask] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name.startswith("_"):
            continue
        name = f"{package.__name__}.{module_info.name}"
        if not _may_define_task(name):
            continue
        module = importlib.import_module(name)
        task = getattr(module, "TASK", None)
        if task is None:
            continue
        if task.name in found:
            raise RuntimeError(f"task name {task.name!r} is defined twice (in {module.__name__})")
        found[task.name] = task
    return found


_TASK_ASSIGNMENT = re.compile(r"^TASK\b", re.MULTILINE)


def _may_define_task(module_name: str) -> bool:
    """Whether the module's source assigns a top-level TASK. Helper modules (masks, rle,
    geometry...) are then never imported just to look, which keeps numpy and Pillow out
    of a producer that only validates jobs."""
    spec = importlib.util.find_spec(module_name)
    origin = spec.origin if spec is not None else None
    if origin is None or not origin.endswith(".py"):
        return True  # no source to read (compiled, frozen): import it and look
    with open(origin, encoding="utf-8") as handle:
        return _TASK_ASSIGNMENT.search(handle.read()) is not None


@cache
def _tasks_by_name() -> dict[str, VisionTask]:
    return discover_tasks(tasks)
