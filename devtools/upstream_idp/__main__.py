"""``python -m devtools.upstream_idp``: see the package docstring."""

import logging

from devtools.upstream_idp.cli import main

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
raise SystemExit(main())
