"""``python -m devtools.sample_ehr``: serve one sample dataset with waitress until SIGTERM/SIGINT.

Once listening it prints one JSON line, and writes it to ``--ready-file`` if given, so a test or
the dev stack started with ``--port 0`` learns the port::

    {"base_url": "http://127.0.0.1:PORT/fhir", "fhir_version": "stu3", "patients": N, "resources": N}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from waitress.server import create_server

from devtools.sample_ehr.app import build_wsgi_app
from devtools.sample_ehr.loader import default_data_dir, load_dataset
from devtools.sample_ehr.store import VERSIONS


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    dataset = load_dataset(args.version, args.data_dir)
    try:
        app = build_wsgi_app(dataset, public_base=args.public_base, auth=args.auth)
    except ValueError as exc:
        _parser().error(str(exc))
    server = create_server(app, host=args.host, port=args.port, threads=args.threads,
                           ident="sample-ehr")
    host = f"[{args.host}]" if ":" in args.host else args.host
    port = server.effective_port  # type: ignore[union-attr]  # types-waitress omits it; BaseWSGIServer sets it
    ready = json.dumps({
        "base_url": f"http://{host}:{port}/fhir",
        "fhir_version": args.version,
        "patients": dataset.patient_count,
        "resources": dataset.resource_count,
    })
    signal.signal(signal.SIGTERM, _stop)
    print(ready, flush=True)
    if args.ready_file:
        _write_atomically(Path(args.ready_file), ready + "\n")
    server.run()  # returns once SIGTERM/SIGINT raised SystemExit/KeyboardInterrupt inside it
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.sample_ehr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, choices=sorted(VERSIONS), help="FHIR version to serve")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(),
                        help="folder holding stu3-smart/ and dstu2-synthea/ (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--public-base", help="base URL for links and fullUrls (default: from Host)")
    parser.add_argument("--auth", default="none", help="none | bearer:<token> | introspect:<url>")
    parser.add_argument("--ready-file", help="write the ready JSON line here once listening")
    return parser


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends waitress's loop the way Ctrl-C does."""
    raise SystemExit(0)


def _write_atomically(path: Path, text: str) -> None:
    """Readers polling for the file never see it half written."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


if __name__ == "__main__":
    sys.exit(main())
