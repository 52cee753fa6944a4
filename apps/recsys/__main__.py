"""`python -m apps.recsys <step> ...` is `deepfield recsys <step> ...`."""

import sys

from shared.cli import main

sys.exit(main(["recsys", *sys.argv[1:]]))
