"""``python -m devtools.functions_host``: see the package docstring."""

from devtools.functions_host.server import main

main()
