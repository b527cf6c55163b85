"""`gvw worker | demo | emulator | doctor | costs`: running and checking a deployment."""

from __future__ import annotations

import argparse
import json

from worker.cli.common import EXIT_FAILED, EXIT_OK, fail


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.queue.app import QUEUE, app

    argv = [
        "worker",
        "-Q",
        QUEUE,
        "--pool",
        args.pool,
        "--concurrency",
        str(args.concurrency),
    ]
    if args.loglevel:
        argv += ["--loglevel", args.loglevel]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.cli.demo import run_demo

    return run_demo(workdir=args.dir, images_dir=args.images, model=args.model)


def cmd_emulator(args: argparse.Namespace) -> int:
    from worker.emulator.options import config_from
    from worker.emulator.server import serve

    serve(host=args.host, port=args.port, api_key=args.api_key, config=config_from(args))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from worker.cli.doctor import run_checks
    from worker.settings import get_settings

    checks = run_checks(get_settings())
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.level == "FAIL"]
    if failed:
        fail(f"{len(failed)} of {len(checks)} checks failed")
        return EXIT_FAILED
    return EXIT_OK


def cmd_costs(args: argparse.Namespace) -> int:
    from worker.runtime import build_ports
    from worker.settings import get_settings

    ports = build_ports(get_settings())
    today = ports.budget.today()
    prices = ports.prices
    models = {
        name: {"input_usd_per_1m": p.input_usd, "output_usd_per_1m": p.output_usd}
        for name, p in sorted(prices.models.items())
    }
    report = {
        "budget_usd_per_day": today.budget_usd if today else None,
        "spent_usd": round(today.spent_usd, 6) if today else None,
        "reserved_usd": round(today.reserved_usd, 6) if today else None,
        "prices_taken_on": prices.taken_on,
        "prices_source": prices.source,
        "batch_discount": prices.batch_discount,
        "models": models,
    }
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    if today is None:
        print("budget: off (GVW_BUDGET_USD_PER_DAY=0)")
    else:
        left = max(0.0, today.budget_usd - today.spent_usd - today.reserved_usd)
        print(
            f"budget: ${today.spent_usd:.4f} spent and ${today.reserved_usd:.4f} reserved of "
            f"${today.budget_usd:g} today (UTC); ${left:.4f} left"
        )
    print(f"prices (USD per 1M tokens, taken on {prices.taken_on}, {prices.source}):")
    for name, row in models.items():
        print(
            f"  {name:<28} input {row['input_usd_per_1m']:>6}  output {row['output_usd_per_1m']:>6}"
        )
    print(f"  batch requests: {prices.batch_discount:.0%} off")
    return EXIT_OK
