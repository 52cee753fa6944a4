"""`python -m apps.nlp <step> ...` is `deepfield nlp <step> ...` (the text app)."""

import sys

from shared.cli import main

sys.exit(main(["nlp", *sys.argv[1:]]))
