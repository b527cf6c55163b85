"""The layering, checked on every import statement (function-level ones included).

- `tasks/` is the pure core: nothing of `worker`, no Celery, broker, storage, network or
  Gemini library.
- The adapters of `worker/` (storage, Gemini, Redis-backed fleet state, images, records)
  import no Celery: only the task (`worker.app`), the consumer guard and the composition
  roots know about it.
- The emulator is an independent witness: it imports nothing of `tasks` or of the rest of
  `worker`, so a parsing bug cannot agree with itself in a test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IO_LIBRARIES = (
    "worker",
    "celery",
    "kombu",
    "boto3",
    "botocore",
    "redis",
    "google",
    "httpx",
    "httpx2",
    "requests",
    "urllib3",
    "socket",
    "http",
    "subprocess",
    "prometheus_client",
)
ADAPTERS = (
    "worker/storage",
    "worker/gemini",
    "worker/images.py",
    "worker/artifacts.py",
    "worker/records.py",
    "worker/job_locks.py",
    "worker/job_claims.py",
    "worker/deliveries.py",
    "worker/answer_store.py",
    "worker/ratelimit.py",
    "worker/ports.py",
    "worker/pipeline.py",
    "worker/failures.py",
    "worker/record_store.py",
    "worker/jobs.py",
    "worker/settings.py",
)


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(*places: str) -> list[Path]:
    files: list[Path] = []
    for place in places:
        path = ROOT / place
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def offending(
    files: list[Path], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()
) -> list[str]:
    found = []
    for path in files:
        for module in sorted(imported_modules(path)):
            top = module.split(".")[0]
            if top in forbidden and not module.startswith(allowed):
                found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


def test_the_core_imports_no_io_and_nothing_of_the_shell() -> None:
    assert offending(python_files("tasks"), IO_LIBRARIES) == []


@pytest.mark.parametrize("place", ADAPTERS)
def test_adapters_import_no_celery(place: str) -> None:
    assert offending(python_files(place), ("celery", "kombu")) == []


def test_the_emulator_imports_nothing_of_tasks_or_the_rest_of_worker() -> None:
    files = python_files("worker/emulator")
    assert offending(files, ("tasks", "worker"), allowed=("worker.emulator",)) == []


def test_the_rules_see_every_kind_of_import() -> None:
    # the check itself: a function-level import counts like a module-level one
    sample = ROOT / "tasks" / "segment.py"
    assert "tasks.masks" in imported_modules(sample)  # imported inside TASK.parse
