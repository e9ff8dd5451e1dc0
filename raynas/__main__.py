import sys

from raynas.cli import main

sys.exit(main())
