"""A FunctionApp with one trivial function, served by the same local Functions host as the gateway.

Its CPU per request is what the host itself costs (waitress, route matching, the azure.functions
request and response types), so the benchmark can say which share of the hop is the host's.
"""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(b'{"ok":true}', mimetype="application/json")
