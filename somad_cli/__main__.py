"""``python -m somad_cli`` runs the ``somad`` command line."""

import sys

from somad_cli.main import main

sys.exit(main())
