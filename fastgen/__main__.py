"""``python -m fastgen``: the command line (see ``fastgen.cli``)."""

import sys

from fastgen.cli import main

sys.exit(main())
