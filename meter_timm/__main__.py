import sys

from meter_timm.cli import main

sys.exit(main())
