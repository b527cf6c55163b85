"""The producer client and the bridge stay light: no image, numeric or Gemini library.

A backend service that only submits jobs, and the Lambda bridge (250 MB unzipped at most),
must not load Pillow, numpy, OpenCV or google-genai. Each entry point is imported in a
fresh interpreter and its loaded modules are read. `scripts/install_size.py` does the same
in a fresh runtime install and measures its size.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import REPO_ROOT

HEAVY = ("PIL", "numpy", "cv2", "google.genai", "pillow_heif")

PROBE = """
import json, sys
import {module}
print(json.dumps([h for h in {heavy!r}
                  if any(n == h or n.startswith(h + ".") for n in sys.modules)]))
"""


@pytest.mark.parametrize(
    "module",
    [
        # worker.producers.client: tests/integration/test_client.py holds it to a stricter list
        "worker.producers",  # what the README imports
        "worker.client",  # its name before issue 19, kept for the services that use it
        "worker.bridge.sqs_runner",
        "worker.bridge.webhook",
        "worker.bridge.lambda_handler",
    ],
)
def test_light_entry_points_import_no_heavy_library(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == []


def test_nothing_imports_opencv() -> None:
    # the mask resize is Pillow's: OpenCV was 150 MB of a 400 MB install for one call
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tasks.masks, worker.queue.app, sys; print('cv2' in sys.modules)",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_the_producers_library_answers_to_its_old_name_too() -> None:
    import worker.client
    import worker.producers

    assert worker.client.VisionClient is worker.producers.VisionClient
