"""`python -m apps.medical <step> ...` is `deepfield medical <step> ...`."""

import sys

from shared.cli import main

sys.exit(main(["medical", *sys.argv[1:]]))
