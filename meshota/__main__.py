import sys

from meshota.cli import main

sys.exit(main())
