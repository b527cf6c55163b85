#!/usr/bin/env python3
"""What installing gvw costs: the runtime install's size, and what the light entry points
import.

1. Creates a throwaway virtualenv, installs this checkout into it exactly as a user would
   (`pip install .`, no test extras), and prints the size of everything pip put there
   (the venv's own pip and setuptools left out), with the largest distributions.
2. In that venv, imports each light entry point in a fresh interpreter and lists the
   heavy libraries it pulled in: the producer client (`worker.producers.client`) and the bridge
   (`worker.bridge.*`, the Lambda handler included) must import none of Pillow, numpy,
   OpenCV or google-genai.

Exit status 1 when the runtime install is over --max-mb (default 250, Lambda's unzipped
limit) or a light entry point imports a heavy library.

    python3 scripts/install_size.py [--max-mb 250] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("PIL", "numpy", "cv2", "google.genai", "pillow_heif")
LIGHT_ENTRY_POINTS = {
    "producer client": "worker.producers.client",
    "bridge (SQS runner)": "worker.bridge.sqs_runner",
    "bridge (webhook)": "worker.bridge.webhook",
    "bridge (Lambda handler)": "worker.bridge.lambda_handler",
}
VENV_TOOLS = {"pip", "setuptools", "wheel"}

_SIZES = """
import importlib.metadata as md, json, os
sizes = {}
for dist in md.distributions():
    total = 0
    for f in dist.files or []:
        try:
            total += os.path.getsize(dist.locate_file(f))
        except OSError:
            pass
    sizes[dist.metadata["Name"]] = total
print(json.dumps(sizes))
"""

_IMPORTS = """
import json, sys
import {module}
loaded = [h for h in {heavy!r} if any(n == h or n.startswith(h + ".") for n in sys.modules)]
print(json.dumps(loaded))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-mb", type=float, default=250.0)
    parser.add_argument("--keep", action="store_true", help="keep the virtualenv and say where")
    args = parser.parse_args()

    where = Path(tempfile.mkdtemp(prefix="gvw-install-size-"))
    venv = where / "venv"
    python = venv / "bin" / "python"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        print(f"installing {REPO} into a new virtualenv (pip install ., no extras) ...")
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                str(REPO),
            ],
            check=True,
        )
        sizes = json.loads(
            subprocess.run(
                [str(python), "-c", _SIZES], check=True, capture_output=True, text=True
            ).stdout
        )
        runtime = {name: size for name, size in sizes.items() if name.lower() not in VENV_TOOLS}
        total_mb = sum(runtime.values()) / 1e6
        print(
            f"\nruntime install: {total_mb:.1f} MB in {len(runtime)} distributions "
            f"(limit {args.max_mb:.0f} MB)"
        )
        for name, size in sorted(runtime.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {size / 1e6:7.1f} MB  {name}")
        failures = []
        if total_mb > args.max_mb:
            failures.append(f"runtime install {total_mb:.1f} MB > {args.max_mb:.0f} MB")
        print("\nheavy libraries imported by the light entry points:")
        for what, module in LIGHT_ENTRY_POINTS.items():
            found = json.loads(
                subprocess.run(
                    [str(python), "-c", _IMPORTS.format(module=module, heavy=HEAVY)],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=where,
                ).stdout
            )
            print(f"  {what:26} {module:32} {', '.join(found) or 'none'}")
            if found:
                failures.append(f"{module} imports {', '.join(found)}")
        for failure in failures:
            print(f"FAIL: {failure}", file=sys.stderr)
        return 1 if failures else 0
    finally:
        if args.keep:
            print(f"\nvirtualenv kept at {venv}")
        else:
            shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
