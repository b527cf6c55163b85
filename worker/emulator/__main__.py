"""`python -m worker.emulator [--host H] [--port P] [--api-key K]`: run in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from worker.emulator.config import EmulatorConfig
from worker.emulator.server import DEFAULT_PORT, serve

API_KEY_ENV = "GVW_EMULATOR_API_KEY"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.emulator",
        description="Gemini REST emulator: answers from the pixels of synthetic shape scenes.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require this x-goog-api-key (default ${API_KEY_ENV}; unset accepts any key)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--processing-delay-s", type=float, default=0.0)
    parser.add_argument("--file-ttl-s", type=float, default=EmulatorConfig.file_ttl_s)
    args = parser.parse_args(argv)
    config = EmulatorConfig(
        latency_ms=args.latency_ms,
        processing_delay_s=args.processing_delay_s,
        file_ttl_s=args.file_ttl_s,
    )
    serve(args.host, args.port, args.api_key, config=config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
