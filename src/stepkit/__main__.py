"""``python -m stepkit``: the command line."""

import sys

from stepkit.cli import main

sys.exit(main())
