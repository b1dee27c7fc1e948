"""`python -m nas.cli COMMAND`: what `torchrun -m nas.cli train ...` runs."""

import sys

from nas.cli import main

sys.exit(main())
