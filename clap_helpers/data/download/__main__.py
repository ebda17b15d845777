"""``python -m clap_helpers.data.download`` (what ``bash dataset.sh`` runs)."""

import sys

from .cli import main

sys.exit(main())
