"""``python -m api.cli`` is ``circuits``."""

import sys

from api.cli import main

sys.exit(main())
