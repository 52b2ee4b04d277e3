"""A FunctionApp with one trivial function, served by the same local Functions host as the gateway.

Its CPU per request is what the host itself costs (uvicorn with httptools, route matching, the
Starlette request and response), so the benchmark can say which share of the hop is the host's.
"""

from __future__ import annotations

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello", methods=["GET"])
async def hello(req: Request) -> Response:
    return Response(b'{"ok":true}', media_type="application/json")
