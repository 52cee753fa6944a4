"""`python -m apps.nlp.speech <step> ...` is `deepfield speech <step> ...`."""

import sys

from shared.cli import main

sys.exit(main(["speech", *sys.argv[1:]]))
