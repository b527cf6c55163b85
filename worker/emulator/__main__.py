"""`python -m worker.emulator [--host H] [--port P] [--api-key K] ...`: run in the
foreground; the same flags as `gvw emulator` (`worker.emulator.options`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from worker.emulator.options import add_emulator_arguments, config_from
from worker.emulator.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.emulator",
        description="Gemini REST emulator: answers from the pixels of synthetic shape scenes.",
    )
    add_emulator_arguments(parser)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.api_key, config=config_from(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
