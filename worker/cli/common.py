"""What every `gvw` command shares: exit statuses, one-line failures, flag values."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK = 0


EXIT_FAILED = 1  # the job failed, or there is no record yet


EXIT_USAGE = 2  # a bad flag, flag value or setting


EXIT_UNKNOWN = 3  # `gvw status`: no record, not queued, not running


class UsageError(ValueError):
    """A flag's value cannot be used: the message names the flag and what is wrong."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: at least 1")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` (1 or more) to `high`, both allowed."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: from {low} to {high}")
        return value

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: more than 0 seconds")
    return value


def non_negative_usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of dollars") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not allowed: 0 or more dollars")
    return value


def fail(reason: str) -> None:
    print(f"gvw: {reason.splitlines()[0] if reason else 'error'}", file=sys.stderr)


def json_flag(flag: str, text: str, *, allow_file: bool) -> Any:
    """A flag's JSON value (inline, or ``@file.json`` where allowed), or a UsageError
    naming the flag, where the JSON breaks and what is expected."""
    source = "its value"
    if allow_file and text.startswith("@"):
        source = text[1:]
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(f"{flag}: cannot read {source}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        expected = "inline JSON or @file.json" if allow_file else "inline JSON"
        raise UsageError(
            f"{flag}: {source} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); expected {expected}"
        ) from None


def job_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("prompt", "output", "model"):
        if getattr(args, key, None):
            options[key] = getattr(args, key)
    if getattr(args, "labels", None):
        options["labels"] = args.labels
    if getattr(args, "schema", None):
        options["response_schema"] = json_flag("--schema", args.schema, allow_file=True)
    if getattr(args, "options_json", None):
        value = json_flag("--options", args.options_json, allow_file=False)
        if not isinstance(value, dict):
            raise UsageError(
                f"--options: expected a JSON object such as '{{\"max_items\": 10}}', "
                f"got {type(value).__name__}"
            )
        options["options"] = value
    if getattr(args, "notify", None):
        options["notify"] = args.notify
    if getattr(args, "batch", False):
        options["options"] = {**options.get("options", {}), "mode": "batch"}
    return options
