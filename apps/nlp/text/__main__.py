"""`python -m apps.nlp.text <step> ...` is `deepfield nlp <step> ...`."""

import sys

from shared.cli import main

sys.exit(main(["nlp", *sys.argv[1:]]))
