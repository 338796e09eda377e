import sys

from prostseg.cli import main

sys.exit(main())
