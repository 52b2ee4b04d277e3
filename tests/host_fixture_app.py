"""A FunctionApp served by devtools.functions_host in tests/test_functions_host.py; nothing else.

The precedence functions are registered, and named, in the reverse of their precedence, so a host
that picked routes by declaration or name order would fail the tests.
"""

from __future__ import annotations

import asyncio
import json
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _described(name: str, req: func.HttpRequest) -> func.HttpResponse:
    """Which function answered, with what it was given."""
    data = {"function": name, "route_params": dict(req.route_params), "params": dict(req.params)}
    return func.HttpResponse(json.dumps(data), mimetype="application/json")


@app.route(route="echo", methods=["GET", "POST", "PUT"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    data = {
        "method": req.method,
        "url": req.url,
        "params": dict(req.params),
        "route_params": dict(req.route_params),
        "headers": dict(req.headers),
        "body": req.get_body().decode("utf-8"),
    }
    status = 201 if req.method == "POST" else 200
    return func.HttpResponse(
        json.dumps(data), status_code=status, mimetype="application/json", headers={"X-Echo": "yes"}
    )


@app.route(route="out/{kind:alpha}")
def responses_out(req: func.HttpRequest) -> func.HttpResponse:
    kind = req.route_params["kind"]
    if kind == "binary":
        return func.HttpResponse(bytes(range(256)), mimetype="application/octet-stream")
    if kind == "explicit":
        headers = {"Content-Type": "application/fhir+json; charset=utf-8"}
        return func.HttpResponse('{"resourceType": "Bundle"}', headers=headers)
    response = func.HttpResponse("<p>hällo</p>", status_code=202, mimetype="text/html")
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("Set-Cookie", "b=2")
    return response


# Precedence: literal > constrained parameter > parameter > catch-all, whatever the order here.
@app.route(route="p/{*rest}")
def a_catch_all(req: func.HttpRequest) -> func.HttpResponse:
    return _described("a_catch_all", req)


@app.route(route="p/{x}/{y}")
def b_param(req: func.HttpRequest) -> func.HttpResponse:
    return _described("b_param", req)


@app.route(route="p/{x:int}/{y}")
def c_constrained(req: func.HttpRequest) -> func.HttpResponse:
    return _described("c_constrained", req)


@app.route(route="p/lit/{y}")
def d_literal(req: func.HttpRequest) -> func.HttpResponse:
    return _described("d_literal", req)


@app.route(route="p/lit/exact")
def e_all_literal(req: func.HttpRequest) -> func.HttpResponse:
    return _described("e_all_literal", req)


@app.route(route="items/{id:int}")
def by_int(req: func.HttpRequest) -> func.HttpResponse:
    return _described("by_int", req)


@app.route(route="items/{name:alpha}")
def by_alpha(req: func.HttpRequest) -> func.HttpResponse:
    return _described("by_alpha", req)


@app.route(route="things/{id:guid}")
def by_guid(req: func.HttpRequest) -> func.HttpResponse:
    return _described("by_guid", req)


@app.route(route=r"codes/{code:regex(^[a-z]{{2}}-\d+$)}")
def by_regex(req: func.HttpRequest) -> func.HttpResponse:
    return _described("by_regex", req)


@app.route(route="pages/{n:int:range(1,10)}")
def by_range(req: func.HttpRequest) -> func.HttpResponse:
    return _described("by_range", req)


@app.route(route="names/{name}")
def by_name(req: func.HttpRequest) -> func.HttpResponse:
    return _described("by_name", req)


@app.route(route="opt/{name?}")
def optional(req: func.HttpRequest) -> func.HttpResponse:
    return _described("optional", req)


@app.route(route="files/{*path}")
def files(req: func.HttpRequest) -> func.HttpResponse:
    return _described("files", req)


@app.route(route="methods", methods=["GET"])
def read_thing(req: func.HttpRequest) -> func.HttpResponse:
    return _described("read_thing", req)


@app.route(route="methods", methods=[func.HttpMethod.POST, "put"])
def write_thing(req: func.HttpRequest) -> func.HttpResponse:
    return _described("write_thing", req)


@app.route()
def default_route(req: func.HttpRequest) -> func.HttpResponse:
    return _described("default_route", req)


@app.route(route="secure/function", auth_level=func.AuthLevel.FUNCTION)
def secured(req: func.HttpRequest) -> func.HttpResponse:
    return _described("secured", req)


@app.route(route="secure/admin", auth_level=func.AuthLevel.ADMIN)
def secured_admin(req: func.HttpRequest) -> func.HttpResponse:
    return _described("secured_admin", req)


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("exploded while handling SECRET-IN-EXCEPTION")


@app.route(route="not-a-response")
def not_a_response(req: func.HttpRequest) -> str:
    return "a plain string"


@app.route(route="slow")
def slow(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(0.5)
    return func.HttpResponse("done")


@app.route(route="async")
async def async_function(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return _described("async_function", req)


@app.timer_trigger(schedule="0 0 * * * *", arg_name="timer")
def hourly(timer: func.TimerRequest) -> None:
    """Not an HTTP trigger: the host must not serve it."""


blueprint = func.Blueprint()


@blueprint.route(route="bp/hello")
def from_blueprint(req: func.HttpRequest) -> func.HttpResponse:
    return _described("from_blueprint", req)


app.register_functions(blueprint)
