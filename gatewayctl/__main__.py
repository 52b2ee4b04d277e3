"""`python -m gatewayctl ...`"""

import sys

from gatewayctl.cli import main

sys.exit(main())
