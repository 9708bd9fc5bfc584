import sys

from dropline_cli import main

sys.exit(main())
