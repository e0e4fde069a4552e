import sys

from trapo.cli import main

sys.exit(main())
