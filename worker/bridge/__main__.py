"""`python -m worker.bridge sqs | webhook ...`: the bridge without the rest of `gvw`."""

from __future__ import annotations

import argparse
import sys

from worker.bridge.cli import DESCRIPTION, EPILOG, add_source_parsers, run_bridge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.bridge",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_parsers(parser)
    return run_bridge(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
