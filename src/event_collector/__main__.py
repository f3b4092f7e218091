"""``python -m event_collector``: the ``event-collector`` command."""

import sys

from .cli import main

sys.exit(main())
