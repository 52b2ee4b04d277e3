"""A local host for the HTTP functions of an Azure Functions v2 (Python) app with HTTP streams; development only.

Why it exists: Azure Functions Core Tools cannot be installed on these machines, yet the functions
must be exercised over real HTTP with exactly the code that runs in Azure. So this host imports
the app's ``FunctionApp`` unchanged (``func start`` keeps working wherever Core Tools exists),
introspects it with ``get_functions()`` and serves its HTTP triggers as one ASGI application under
uvicorn (uvloop, httptools), which is what the Python worker runs in Azure once HTTP streams
(``azurefunctions-extensions-http-fastapi``) are on. It is never deployed (``.funcignore`` excludes
``devtools/``).

What it copies from Azure, and where it knowingly differs:

* Functions are ``async def f(req: Request) -> Response`` with FastAPI's (Starlette's) types. Each
  gets a ``Request`` over the connection itself: method, raw path, raw query string, headers, the
  body as a stream, and ``path_params`` holding the route values (strings), as the worker's
  ``sync_route_params`` leaves them. The returned ``Response`` (any Starlette subclass, a
  ``StreamingResponse`` included) is sent as it is, chunk by chunk.
* The query string reaches the function unchanged, ``code`` included: the v1 binding's quirks
  (case-insensitive keys, repeats joined with ``,``, empty values dropped) do not apply to streams.
* Routes are ``{routePrefix}/{route}`` (``extensions.http.routePrefix`` in the app's ``host.json``,
  ``api`` by default) in ASP.NET Core template syntax; a function without a route is served at
  its name. A method the trigger does not allow only makes the route not match, so the answer is
  404, as in Azure (not 405).
* Overlapping routes: this host ranks them by ASP.NET Core route precedence. Azure does not: it
  tries routes in the order it registers them, which follows the function names, not how specific
  a route is (azure-functions-host#9876). Whenever more than one route matches a request this host
  logs a warning, because Azure may then pick a different function.
* FUNCTION and ADMIN functions need a key from ``LOCAL_FUNCTION_KEY`` (comma-separated) in
  ``x-functions-key`` (which wins) or ``?code=``; with no key configured they answer 401 to every
  request. Core Tools switches keys off locally; this host keeps them so auth is exercised.
* Request bodies over ``--max-body-bytes`` answer 413: at once when Content-Length says so (the
  function never runs), otherwise when the function reads past the limit. The default is Azure's
  ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` default, 100 MB, so that nothing Azure would pass is refused
  here; the gateway's own, tighter limits are the app's to enforce.
* ``request.client`` is the TCP peer. X-Forwarded-For is passed on as a header and never trusted
  (in Azure the front end sets it; here anyone can).
* An exception, or a result that is not a Starlette ``Response``, answers 500 with an empty body;
  the details go to the log only. (Azure's worker would also accept ``str``, ``dict`` and the like;
  this host does not, and it refuses functions that are not ``async def``.) An exception once the
  response has started aborts the connection, so the client cannot take a truncated body for a
  complete one.
* ``local.settings.json`` ``Values`` become environment variables before the app is imported, as
  ``func start`` does it: a non-empty variable already in the environment wins, and an empty value
  leaves the variable unset.
* uvicorn here always runs uvloop and httptools; the worker's uvicorn (default ``auto``) uses them
  only if the deployed app installs them, else asyncio's loop and h11. Same ASGI messages either way.
* The access log (logger ``devtools.functions_host.access``) names method, function, status and time,
  never the path or query: both carry patient data.

Usage::

    python -m devtools.functions_host [--app function_app:app] [--host 127.0.0.1] [--port 7071]
        [--max-body-bytes 104857600] [--settings local.settings.json] [--ready-file F]

Once listening it prints ``{"base_url": "http://127.0.0.1:PORT", "pid": PID}`` on stdout and writes
the same line atomically to the ready file, which it removes again when it stops (SIGTERM, SIGINT).
"""

from devtools.functions_host.asgi import FunctionsHost, build_asgi_app
from devtools.functions_host.server import load_settings, main, read_route_prefix, serve

__all__ = ["FunctionsHost", "build_asgi_app", "load_settings", "main", "read_route_prefix", "serve"]
