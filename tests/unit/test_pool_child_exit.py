"""A prefork child told to stop stops, even when the signal lands in a weakref callback.

billiard's SIGTERM handler raises SystemExit in whatever frame runs; inside a weakref
callback Python ignores it, prints a traceback, and the child would run on with the job
Celery cancelled (seen in the Redis-restart scenario, where Celery cancels the jobs in
flight). `worker.queue.app` installs an unraisable hook in each pool child that exits.
"""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO_ROOT

# a child as billiard leaves it after its SIGTERM handler ran: the flag set, and the
# SystemExit raised where Python can only report it (a weakref callback)
CHILD = """
import gc, weakref
import billiard.common
from worker.queue.app import _init_pool_child
import worker.queue.app as app
app.runtime.init_process = lambda warm: None  # the hook is what is under test
_init_pool_child()
billiard.common._should_have_exited[0] = True

class Thing: pass

def told_to_stop(ref):
    raise SystemExit(-(256 - 15))  # what billiard's _shutdown_cleanup raises for SIGTERM

thing = Thing()
ref = weakref.ref(thing, told_to_stop)
del thing
gc.collect()
print("ran on after being told to stop", flush=True)
"""


def test_a_pool_child_told_to_stop_in_a_weakref_callback_exits() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "ran on" not in done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 15  # -241 as an exit status, as billiard's own exit gives


def test_other_unraisable_errors_are_still_reported() -> None:
    child = CHILD.replace("billiard.common._should_have_exited[0] = True", "").replace(
        "raise SystemExit(-(256 - 15))", "raise ValueError('a bug in a callback')"
    )
    done = subprocess.run(
        [sys.executable, "-c", child],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "ran on" in done.stdout
    assert "ValueError: a bug in a callback" in done.stderr
    assert done.returncode == 0
