"""``python -m devtools.keyvault_emulator``: see the package docstring."""

import sys

from devtools.keyvault_emulator.server import main

sys.exit(main())
