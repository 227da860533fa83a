import sys

from inheritune.cli import main

sys.exit(main())
