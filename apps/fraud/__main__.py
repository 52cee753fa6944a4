"""`python -m apps.fraud <step> ...` is `deepfield fraud <step> ...`."""

import sys

from shared.cli import main

sys.exit(main(["fraud", *sys.argv[1:]]))
