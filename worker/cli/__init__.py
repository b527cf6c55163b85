"""`gvw`: the operator's command line, a module per command group.

main.py         the entry point: parse, dispatch, one-line errors and exit statuses
parser.py       every command, flag and help text
common.py       what the commands share: exit statuses, failures, flag values
jobs.py         submit, status, result
prefix.py       enqueue-prefix (estimate.py: its --dry-run)
operate.py      worker, demo (demo.py), emulator, doctor (doctor.py), costs
fleet_state.py  files (files.py), batches, dead-letters
"""

from worker.cli.main import main
from worker.cli.parser import build_parser

__all__ = ["build_parser", "main"]
