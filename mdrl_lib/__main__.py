import sys

from mdrl_lib.cli import main

sys.exit(main())
