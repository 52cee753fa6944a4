"""`python -m apps.vision <step> ...` is `deepfield vision <step> ...`."""

import sys

from shared.cli import main

sys.exit(main(["vision", *sys.argv[1:]]))
