"""``python -m unifusion_sam``: the ``unifusion-sam`` command line (see :mod:`unifusion_sam.cli`)."""

import sys

from .cli import main

sys.exit(main())
