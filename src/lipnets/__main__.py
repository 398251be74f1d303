"""`python -m lipnets ...` runs the `lipnets` command."""

import sys

from lipnets.cli.main import main

sys.exit(main())
