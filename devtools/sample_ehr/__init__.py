"""Sample EHR: a small, read-only FHIR provider server for development, tests and benchmarks.

No runnable STU3/DSTU2 FHIR server is available to this project, so the gateway's dev stack,
tests and benchmarks talk to this one instead; it is never deployed. One process serves one
version of the synthetic data in ``<repo>/../shared/data``: ``stu3`` (``stu3-smart/``, FHIR
3.0.2) or ``dstu2`` (``dstu2-synthea/``, FHIR 1.0.2), under ``http://HOST:PORT/fhir``.

The data has no Coverage or Location: those (and three insurer Organizations) are derived at
load time, deterministically, and every Encounter gets a ``location[0]``; see
:mod:`devtools.sample_ehr.derive`. The server's CapabilityStatement/Conformance says so too.

It supports metadata, read (with ETag/Last-Modified and If-None-Match), search by GET and by
POST ``_search`` (:mod:`devtools.sample_ehr.search` lists the parameters), paging, batch, a
request log at ``/_admin/requests`` and optional upstream auth (:mod:`devtools.sample_ehr.auth`).

Command line: ``python -m devtools.sample_ehr --version stu3|dstu2 [--port 0] [--ready-file F]``.
In Python::

    app = build_wsgi_app(load_dataset("stu3"), auth="bearer:secret")
"""

from devtools.sample_ehr.app import SampleEhr, build_wsgi_app
from devtools.sample_ehr.loader import load_dataset

__all__ = ["SampleEhr", "build_wsgi_app", "load_dataset"]
