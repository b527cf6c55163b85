"""What the repository's text points at is in the repository.

A user's clone has the repository and nothing beside it: a Markdown file a comment, a
manifest or a page names must be one of the repository's own (or a URL), and a module
path a page names must be where the page says. Pages go stale when code moves; these
tests say where.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Text that cites files: source, docs, manifests, build and shell scripts.
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".toml", ".tf", ".json", ".sh", ".dockerignore"}
# Not the project's own words: copies of real third-party answers and files kept as data.
NOT_OURS = {Path("tests/fixtures")}
SKIPPED_DIRS = {"__pycache__", "node_modules", "build", "dist"}

# A Markdown file name with the folders in front of it (`docs/contract.md`); a URL
# (https://...) is taken whole, so that it can be told apart.
MD_NAME = re.compile(r"(?:[a-z][a-z0-9+.-]*://)?[\w./~-]*\w\.md\b", re.IGNORECASE)
# A path into the code or the repository's other top folders: `worker/images/prepare.py`,
# `worker/storage/`, `tests/unit/test_import_rules.py`.
REPO_PATH = re.compile(
    r"(?<![\w./~-])((?:worker|tasks|tests|infra|benchmarks|scripts|docs)/[\w./-]*[\w/])"
)
# A dotted module name in a code span: `worker.queue.broker_transport`, `tasks.pricing`.
DOTTED = re.compile(r"`((?:worker|tasks)(?:\.\w+)+)")


@functools.cache
def text_files() -> tuple[Path, ...]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        here = Path(folder)
        # hidden folders (.git, .venv, caches), build output, and data that is not ours
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".")
            and d not in SKIPPED_DIRS
            and not d.endswith(".egg-info")
            and (here / d).relative_to(ROOT) not in NOT_OURS
        ]
        for name in files:
            path = here / name
            if (
                path.suffix in TEXT_SUFFIXES
                or name.startswith("Dockerfile")
                or here.name == "scripts"
            ):
                found.append(path)
    return tuple(sorted(found))


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def md_exists(cited: str, citing: Path) -> bool:
    """`cited` names a file of the repository: from the root, from the citing file's
    folder, or (a bare name such as README.md) by its name anywhere in it."""
    if (ROOT / cited).is_file() or (citing.parent / cited).is_file():
        return True
    return "/" not in cited and any(
        p != citing and p.name == cited for p in text_files() if p.suffix == ".md"
    )


def test_the_scan_sees_the_files_it_is_about() -> None:
    seen = {p.relative_to(ROOT).as_posix() for p in text_files()}
    for expected in (
        "README.md",
        "docs/contract.md",
        "docs/reliability.md",
        "docker-compose.yml",
        "infra/Dockerfile",
        "infra/k8s/redis.yaml",
        "infra/terraform/sqs.tf",
        "pyproject.toml",
        "scripts/test",
        "worker/queue/app.py",
        "tests/unit/test_infra_files.py",
    ):
        assert expected in seen, expected


def test_every_markdown_file_named_is_in_the_repository() -> None:
    missing = []
    for path in text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in MD_NAME.finditer(line):
                cited = match.group(0)
                if "://" in cited:
                    continue  # a URL: someone else's page
                if not md_exists(cited, path):
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {cited}")
    assert not missing, "Markdown files named but not in the repository:\n" + "\n".join(missing)


def test_nothing_points_outside_the_repository() -> None:
    # the folder beside the repository some of its pages were first written from
    shared = "shared"
    outside = re.compile(rf"\.\./{shared}\b|/work/{shared}\b")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in text_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not found, "\n".join(found)


def test_every_path_a_page_names_exists() -> None:
    missing = []
    for page in pages():
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for match in REPO_PATH.finditer(line):
                cited = match.group(1).rstrip(".")
                if not (ROOT / cited).exists():
                    missing.append(f"{page.relative_to(ROOT)}:{number}: {cited}")
    assert not missing, "paths named but not in the repository:\n" + "\n".join(missing)


def module_exists(dotted: str) -> bool:
    """`worker.storage.uris`, or `worker.gemini.GeminiGateway` (a name a package's
    __init__.py exports), or `tasks.pricing.estimate` (a name in a module): the module
    part must be a file or a package of the repository."""
    path = ROOT
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        if (path / part / "__init__.py").is_file():
            path = path / part
        elif (path / f"{part}.py").is_file():
            return True  # what follows is a name inside the module
        else:
            init = path / "__init__.py"
            return index > 1 and init.is_file() and part in init.read_text()
    return True


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_module_a_page_names_exists(page: Path) -> None:
    missing = [
        f"{page.relative_to(ROOT)}:{number}: {match.group(1)}"
        for number, line in enumerate(page.read_text().splitlines(), 1)
        for match in DOTTED.finditer(line)
        if not module_exists(match.group(1))
    ]
    assert not missing, "modules named but not in the code:\n" + "\n".join(missing)


def test_every_module_in_the_architecture_tree_exists() -> None:
    """The layout block of docs/architecture.md names modules by file name, under the top
    folder (tasks/ or worker/) whose section they are in."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```", 2)[1]
    folder = None
    missing = []
    for line in block.splitlines():
        top = re.match(r"(\w+)/\s", line + " ")
        if top:
            folder = ROOT / top.group(1)
        if folder is None or folder.name not in ("tasks", "worker"):
            continue
        for name in re.findall(r"(?<![\w/.])(\w+\.py|\w+/)(?=[\s,)]|$)", line):
            if name in ("tasks/", "worker/"):
                continue  # the section's own folder, or prose about it
            found = (
                list(folder.rglob(name.rstrip("/")))
                if name.endswith("/")
                else list(folder.rglob(name))
            )
            if not found:
                missing.append(f"{folder.name}: {name}  ({line.strip()})")
    assert not missing, "\n".join(missing)


def test_every_test_a_page_names_exists() -> None:
    """docs/security.md and docs/reliability.md prove each promise by a test's name."""
    defined = {
        name
        for path in (ROOT / "tests").rglob("test_*.py")
        for name in re.findall(r"^\s*def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    missing = [
        f"{page.relative_to(ROOT)}: {name}"
        for page in pages()
        for name in re.findall(r"\b(test_\w+)\b(?!\.py)", page.read_text())
        if name not in defined
    ]
    assert not missing, "tests named but not in tests/:\n" + "\n".join(missing)
