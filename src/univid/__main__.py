import sys

from univid.cli import main

sys.exit(main())
