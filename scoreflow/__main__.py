import sys

from scoreflow.cli.main import main

sys.exit(main())
