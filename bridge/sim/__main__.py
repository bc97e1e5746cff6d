"""`python -m bridge.sim ...`: the simulator's command line."""

import sys

from bridge.sim.cli import main

sys.exit(main(sys.argv[1:]))
