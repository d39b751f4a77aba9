"""``python -m aceg`` (and ``torchrun ... -m aceg pretrain ...``) runs the CLI."""

import sys

from aceg.cli.main import main

sys.exit(main())
