"""`gvw`: submit jobs, read their results, run workers, the demo and the emulator.

Exit status 0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tasks.errors import GvwError
from worker.bridge.cli import run_bridge
from worker.cli.common import EXIT_FAILED, EXIT_USAGE, UsageError, fail
from worker.cli.events import cmd_events
from worker.cli.export import cmd_export, cmd_report
from worker.cli.fleet_state import cmd_batches, cmd_dead_letters, cmd_files
from worker.cli.jobs import cmd_result, cmd_show, cmd_status, cmd_submit
from worker.cli.operate import cmd_costs, cmd_demo, cmd_doctor, cmd_emulator, cmd_worker
from worker.cli.parser import build_parser
from worker.cli.prefix import cmd_enqueue_prefix
from worker.cli.runs import cmd_runs
from worker.producers.producer import BrokerUnavailable
from worker.settings import SettingsInvalid


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = _HANDLERS[args.command]
        return handler(args)
    except (SettingsInvalid, UsageError) as err:
        fail(str(err))
        return EXIT_USAGE
    except GvwError as err:
        fail(f"{err.code}: {err.message}")
        return EXIT_FAILED
    except (BrokerUnavailable, TimeoutError) as err:
        fail(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except Exception as exc:
        fail(f"{exc.__class__.__name__}: {exc}")
        return EXIT_FAILED


_HANDLERS = {
    "submit": cmd_submit,
    "batches": cmd_batches,
    "costs": cmd_costs,
    "status": cmd_status,
    "result": cmd_result,
    "worker": cmd_worker,
    "demo": cmd_demo,
    "emulator": cmd_emulator,
    "files": cmd_files,
    "dead-letters": cmd_dead_letters,
    "events": cmd_events,
    "doctor": cmd_doctor,
    "enqueue-prefix": cmd_enqueue_prefix,
    "runs": cmd_runs,
    "export": cmd_export,
    "report": cmd_report,
    "show": cmd_show,
    "bridge": run_bridge,
}


if __name__ == "__main__":
    sys.exit(main())
