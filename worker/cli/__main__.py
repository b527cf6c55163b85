"""`python -m worker.cli` is `gvw`."""

import sys

from worker.cli.main import main

sys.exit(main())
