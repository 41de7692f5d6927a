"""``python -m dffx`` = the ``dffx`` command."""

import sys

from .cli import main

sys.exit(main())
