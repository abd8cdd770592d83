import sys

from exporter_api.cli import main

sys.exit(main())
