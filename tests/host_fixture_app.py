"""A FunctionApp served by devtools.functions_host in tests/test_functions_host.py; nothing else.

Its functions have the HTTP streams shape: ``async def f(req: Request) -> Response`` with the
extension's (FastAPI's) types. The precedence functions are registered, and named, in the reverse
of their precedence, so a host that picked routes by declaration or name order would fail the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import azure.functions as func
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response, StreamingResponse

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# /api/stream/{n} holds its last chunk until /api/stream-release is called: the test sees the first
# chunks while the function is provably still producing the body.
_release = asyncio.Event()


def _described(name: str, req: Request) -> JSONResponse:
    """Which function answered, with what it was given (the raw query string included)."""
    return JSONResponse({"function": name, "route_params": dict(req.path_params), "query": req.url.query})


@app.route(route="echo", methods=["GET", "POST", "PUT"])
async def echo(req: Request) -> Response:
    body = await req.body()
    data = {
        "method": req.method,
        "url": str(req.url),
        "query": req.url.query,
        "query_items": list(req.query_params.multi_items()),
        "route_params": dict(req.path_params),
        "headers": dict(req.headers),
        "client": list(req.client) if req.client else None,
        "loop": type(asyncio.get_running_loop()).__module__,
        "body": body.decode("utf-8"),
    }
    status = 201 if req.method == "POST" else 200
    return JSONResponse(data, status_code=status, headers={"X-Echo": "yes"})


@app.route(route="out/{kind:alpha}")
async def responses_out(req: Request) -> Response:
    kind = req.path_params["kind"]
    if kind == "binary":
        return Response(bytes(range(256)), media_type="application/octet-stream")
    if kind == "explicit":
        headers = {"Content-Type": "application/fhir+json; charset=utf-8"}
        return Response('{"resourceType": "Bundle"}', headers=headers)
    response = Response("<p>hällo</p>", status_code=202, media_type="text/html")
    response.headers.append("Set-Cookie", "a=1")
    response.headers.append("Set-Cookie", "b=2")
    return response


# Precedence: literal > constrained parameter > parameter > catch-all, whatever the order here.
@app.route(route="p/{*rest}")
async def a_catch_all(req: Request) -> Response:
    return _described("a_catch_all", req)


@app.route(route="p/{x}/{y}")
async def b_param(req: Request) -> Response:
    return _described("b_param", req)


@app.route(route="p/{x:int}/{y}")
async def c_constrained(req: Request) -> Response:
    return _described("c_constrained", req)


@app.route(route="p/lit/{y}")
async def d_literal(req: Request) -> Response:
    return _described("d_literal", req)


@app.route(route="p/lit/exact")
async def e_all_literal(req: Request) -> Response:
    return _described("e_all_literal", req)


@app.route(route="items/{id:int}")
async def by_int(req: Request) -> Response:
    return _described("by_int", req)


@app.route(route="items/{name:alpha}")
async def by_alpha(req: Request) -> Response:
    return _described("by_alpha", req)


@app.route(route="things/{id:guid}")
async def by_guid(req: Request) -> Response:
    return _described("by_guid", req)


@app.route(route=r"codes/{code:regex(^[a-z]{{2}}-\d+$)}")
async def by_regex(req: Request) -> Response:
    return _described("by_regex", req)


@app.route(route="pages/{n:int:range(1,10)}")
async def by_range(req: Request) -> Response:
    return _described("by_range", req)


@app.route(route="names/{name}")
async def by_name(req: Request) -> Response:
    return _described("by_name", req)


@app.route(route="opt/{name?}")
async def optional(req: Request) -> Response:
    return _described("optional", req)


@app.route(route="files/{*path}")
async def files(req: Request) -> Response:
    return _described("files", req)


@app.route(route="methods", methods=["GET"])
async def read_thing(req: Request) -> Response:
    return _described("read_thing", req)


@app.route(route="methods", methods=[func.HttpMethod.POST, "put"])
async def write_thing(req: Request) -> Response:
    return _described("write_thing", req)


@app.route()
async def default_route(req: Request) -> Response:
    return _described("default_route", req)


@app.route(route="secure/function", auth_level=func.AuthLevel.FUNCTION)
async def secured(req: Request) -> Response:
    return _described("secured", req)


@app.route(route="secure/admin", auth_level=func.AuthLevel.ADMIN)
async def secured_admin(req: Request) -> Response:
    return _described("secured_admin", req)


@app.route(route="boom")
async def boom(req: Request) -> Response:
    raise RuntimeError("exploded while handling SECRET-IN-EXCEPTION")


@app.route(route="not-a-response")
async def not_a_response(req: Request) -> str:
    return "a plain string"


@app.route(route="slow")
async def slow(req: Request) -> Response:
    await asyncio.sleep(0.5)
    return Response("done")


@app.route(route="stream/{n:int}")
async def stream(req: Request) -> Response:
    """n chunks, then one more only once released (or after 10 s, so a failing test cannot hang)."""
    count = int(req.path_params["n"])

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(count):
            yield f"chunk {index}\n".encode()
        try:
            await asyncio.wait_for(_release.wait(), timeout=10)
        finally:
            _release.clear()
        yield b"last\n"

    return StreamingResponse(chunks(), media_type="text/plain")


@app.route(route="stream-release", methods=["POST"])
async def stream_release(req: Request) -> Response:
    _release.set()
    return Response(status_code=204)


@app.route(route="stream-fails")
async def stream_fails(req: Request) -> Response:
    """Starts a chunked body, then fails: the client must not see a cleanly finished response."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"partial "
        await asyncio.sleep(0.05)
        raise RuntimeError("the upstream went away mid-body")

    return StreamingResponse(chunks(), media_type="text/plain")


@app.route(route="body-size", methods=["POST"])
async def body_size(req: Request) -> Response:
    """Reads the whole body as a stream; only what the host lets through arrives."""
    size = 0
    async for chunk in req.stream():
        size += len(chunk)
    return JSONResponse({"size": size})


@app.timer_trigger(schedule="0 0 * * * *", arg_name="timer")
def hourly(timer: func.TimerRequest) -> None:
    """Not an HTTP trigger: the host must not serve it."""


blueprint = func.Blueprint()


@blueprint.route(route="bp/hello")
async def from_blueprint(req: Request) -> Response:
    return _described("from_blueprint", req)


app.register_functions(blueprint)
