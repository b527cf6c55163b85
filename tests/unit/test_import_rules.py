"""The rooms and their rules, checked on every import statement (function-level ones included).

The rules are import-linter contracts in pyproject.toml (`[tool.importlinter]`):

- `worker/`'s rooms are layered: a room imports only rooms below it;
- `tasks/` is the pure core: nothing of `worker`, no Celery, broker, storage, network or
  Gemini library;
- only the queue room and the roots know Celery: the job's flow and the adapters do not;
- producers, the bridge and the contract import no image, numeric or Gemini library;
- the emulator is an independent witness: it imports nothing of `tasks` or of the rest of
  `worker`, so a parsing bug cannot agree with itself in a test.

`scripts/test` runs `lint-imports` too; these tests also prove the contracts catch what
they claim to, on a copy of the tree with a rule broken on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def contracts() -> dict[str, dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_every_contract_is_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_room_of_worker_is_in_the_layers() -> None:
    # a new package or ground-floor module must take a place in the rules, not slip past them
    layered = {
        name.strip()
        for layer in contracts()["rooms"]["layers"]  # type: ignore[attr-defined]
        for name in layer.split("|")
    }
    on_disk = {
        f"worker.{p.name if p.is_dir() else p.stem}"
        for p in (ROOT / "worker").iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem != "__init__")
    }
    # the emulator is outside the layers: its own contract keeps it apart from everything;
    # the composition root is the top of the worker's side (only queue and cli import it)
    assert on_disk - layered - {"worker.emulator"} == set()


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for folder in ("worker", "tasks"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    ("module", "statement", "broken"),
    [
        ("worker/pipeline/flow.py", "import celery", "Only the queue room"),
        ("worker/fleet/budget.py", "from worker.pipeline import flow", "a room imports only"),
        ("worker/producers/client.py", "import numpy", "stay light"),
        ("worker/contract/jobs.py", "from PIL import Image", "stay light"),
        ("tasks/caption.py", "import socket", "pure core"),
        ("tasks/caption.py", "from worker import settings", "pure core"),
        ("worker/emulator/vision.py", "from tasks import geometry", "independent witness"),
        ("worker/queue/app.py", "from worker.producers import producer", "a room imports only"),
    ],
)
def test_a_broken_rule_is_caught(tree_copy: Path, module: str, statement: str, broken: str) -> None:
    path = tree_copy / module
    original = path.read_text()
    try:
        # inside a function, as the lazy imports of this code base are
        path.write_text(original + f"\n\ndef _probe() -> None:\n    {statement}  # noqa\n")
        done = lint_imports(tree_copy)
    finally:
        path.write_text(original)
    assert done.returncode != 0
    broken_lines = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken_lines) == 1, done.stdout[-3000:]
    assert broken in done.stdout
