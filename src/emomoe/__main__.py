import sys

from emomoe.cli import main

sys.exit(main())
