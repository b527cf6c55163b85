"""The emulator's command-line flags, one list for `gvw emulator` and
`python -m worker.emulator` (which must not drift apart)."""

from __future__ import annotations

import argparse
import os

from worker.emulator.config import EmulatorConfig
from worker.emulator.server import DEFAULT_PORT

API_KEY_ENV = "GVW_EMULATOR_API_KEY"


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"0 picks a free port (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require this x-goog-api-key (default ${API_KEY_ENV}; unset accepts any key)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="added to every generateContent answer (default 0)",
    )
    parser.add_argument(
        "--processing-delay-s",
        type=float,
        default=0.0,
        metavar="S",
        help="how long an upload stays PROCESSING before it is ACTIVE (default 0)",
    )
    parser.add_argument(
        "--file-ttl-s",
        type=float,
        default=EmulatorConfig.file_ttl_s,
        metavar="S",
        help=f"an upload's life before it expires (default {EmulatorConfig.file_ttl_s:g}, "
        "Gemini's 48 h)",
    )


def config_from(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        latency_ms=args.latency_ms,
        processing_delay_s=args.processing_delay_s,
        file_ttl_s=args.file_ttl_s,
    )
