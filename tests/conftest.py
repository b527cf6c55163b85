"""Shared test fixtures, and how the suite is split and run.

The real Gemini outputs are kept verbatim in the repo, with their manifest, under
``tests/fixtures/gemini_real/``: a clone needs nothing beside it to run its tests.

Two tiers (README.md, "Development"):

- the fast tier, ``-m inprocess`` (``scripts/test --fast``): ``tests/unit/`` and the
  integration tests that run in one process (the emulator, moto's server and local adapters
  on threads). About a minute, for the edit-test loop.
- the full suite (``scripts/test``, what CI runs): the fast tier, plus the tests marked
  ``integration`` (real ``redis-server``, moto's S3 server and ``celery worker`` processes
  on loopback) and everything under ``tests/reliability/`` (marked ``reliability`` here).
  A test file that marks nothing is in the full suite only.

Both run in parallel (pytest-xdist, ``--dist loadgroup``). Each test process has its own
block of ports (``tests.harness.free_port``) and its own temporary folder; every service a
test kills, blocks, restarts or configures is its own. Tests that share something expensive
through a module fixture are one ``xdist_group``, run by one process. Tests marked
``wallclock`` assert wall-clock bounds that CPU contention could break: they are one group
(one after another), and while one runs, its process (and every process and thread it
starts) has the CPU ahead of the other tests' (`_cpu_priority`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
GEMINI_REAL = TESTS / "fixtures" / "gemini_real"

# Under pytest-xdist, the niceness of every test process, and of what it starts, except
# while a `wallclock` test runs: that one gets the process's own niceness back. On Linux
# a nice of 10 weighs about a tenth of a nice of 0, so a wallclock test and its workers run
# nearly as on an idle machine while the other tests use what CPU is left.
OTHER_TESTS_NICENESS = 10
_nice = {"base": 0, "enabled": False}

# Where the test processes of one parallel run leave the controller the groups they read
# from the `xdist_group` marks (`_GroupScheduling`).
_RUN_DIR = "GVW_PYTEST_RUN_DIR"


@pytest.fixture(scope="session")
def gemini_real() -> Path:
    """The folder of verbatim Gemini outputs (``fixtures/gemini_real/``)."""
    if not GEMINI_REAL.is_dir():
        pytest.fail(f"real Gemini fixtures not found at {GEMINI_REAL}")
    return GEMINI_REAL


def _in_xdist_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


# --- CPU priority for wallclock tests -----------------------------------------------------


def _can_lower_niceness() -> bool:
    """Whether this process may give a thread its niceness back once raised (root, or an
    RLIMIT_NICE that allows it). Tried in a thread of its own, which then ends."""
    allowed: list[bool] = []

    def probe() -> None:
        # Linux: the niceness of PRIO_PROCESS 0 is the calling thread's
        base = os.getpriority(os.PRIO_PROCESS, 0)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, base + 1)
            os.setpriority(os.PRIO_PROCESS, 0, base)
            allowed.append(True)
        except OSError:
            allowed.append(False)

    thread = threading.Thread(target=probe, name="niceness-probe")
    thread.start()
    thread.join()
    return allowed == [True]


def pytest_sessionstart(session: pytest.Session) -> None:
    if _in_xdist_worker() and _can_lower_niceness():
        _nice["base"] = os.getpriority(os.PRIO_PROCESS, 0)
        _nice["enabled"] = True
        # the thread that runs the tests, and so every process and thread it starts
        os.setpriority(os.PRIO_PROCESS, 0, _nice["base"] + OTHER_TESTS_NICENESS)


@pytest.fixture(autouse=True)
def _cpu_priority(request: pytest.FixtureRequest) -> Iterator[None]:
    """A `wallclock` test, and what it starts, runs ahead of the other tests on the CPU."""
    if not (_nice["enabled"] and request.node.get_closest_marker("wallclock")):
        yield
        return
    os.setpriority(os.PRIO_PROCESS, 0, _nice["base"])
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, _nice["base"] + OTHER_TESTS_NICENESS)


# --- tiers, order and groups --------------------------------------------------------------


def _tier(item: pytest.Item) -> int:
    """0: reliability, 1: integration, 2: fast tier. Run in this order in parallel, the
    long tests start first and the thousand short ones fill the gaps at the end."""
    if item.get_closest_marker("reliability"):
        return 0
    if item.get_closest_marker("inprocess"):
        return 2
    return 1


def _group(item: pytest.Item) -> str | None:
    """The item's `xdist_group` (several marks: their names joined, as xdist does)."""
    names = sorted(
        {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
    )
    return "_".join(names) or None


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path)
        if TESTS / "unit" in path.parents:
            item.add_marker(pytest.mark.inprocess)
        elif TESTS / "reliability" in path.parents:
            item.add_marker(pytest.mark.reliability)
        if item.get_closest_marker("wallclock"):
            item.add_marker(pytest.mark.xdist_group("wallclock"))
    if not _in_xdist_worker():
        return
    items.sort(key=_tier)  # stable: each file's tests stay in their order
    run_dir = os.environ.get(_RUN_DIR)
    if run_dir:
        groups = {item.nodeid: group for item in items if (group := _group(item))}
        handle, written = tempfile.mkstemp(dir=run_dir, suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(groups, out)
        os.replace(written, Path(run_dir) / "groups.json")  # every worker writes the same


def pytest_configure(config: pytest.Config) -> None:
    if _in_xdist_worker() or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.getoption("dist", "no") == "loadgroup":
        run_dir = tempfile.mkdtemp(prefix="gvw-pytest-run-")
        os.environ[_RUN_DIR] = run_dir  # the test processes, started next, inherit it
        config.add_cleanup(lambda: shutil.rmtree(run_dir, ignore_errors=True))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`, with the groups the test processes read from the marks.

    pytest-xdist 3.8 tells the controller a test's group by appending it to the test's id
    during collection, which pytest 9.2's structured node ids no longer allow
    (pytest-xdist#1386): every group would silently be spread over all processes. Here the
    test processes write their groups to a file (`pytest_collection_modifyitems`) that the
    controller's scheduler reads once every process has collected."""
    run_dir = os.environ.get(_RUN_DIR)
    if config.getoption("dist", "no") != "loadgroup" or not run_dir:
        return None
    from xdist.scheduler import LoadGroupScheduling

    class _GroupScheduling(LoadGroupScheduling):
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                self._groups = json.loads((Path(run_dir) / "groups.json").read_text())
            return self._groups.get(nodeid) or super()._split_scope(nodeid)

    return _GroupScheduling(config, log)
