"""nginx (the Debian package) as a non-daemon child: a fixed-bytes FHIR provider and a plain reverse proxy.

Why nginx for both: serving precomputed JSON files, it answers in tens of microseconds, so the
difference between "direct" and "through the gateway" is the gateway's hop and not the sample
EHR's search code; as a reverse proxy in front of the same provider it is the best a proxy hop
can do on this machine. Each instance is one process (`master_process off`) with its config,
logs and temp files in its own prefix directory, listening on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from devtools.stack import free_port, port_open

READY_TIMEOUT = 10.0

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")  # Debian: libnginx-mod-http-echo
WAN_DELAY_S = 0.02

_COMMON = """
{modules}
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log combined buffer=256k flush=1s;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
{servers}
}}
"""

_PROVIDER = """
    server {{
        listen 127.0.0.1:{port};
        root {www};
        types {{ }}
        default_type application/fhir+json;
        etag on;
        location ~ ^/wan/fhir/(?<rest>.*)$ {{ echo_sleep {delay}; echo_exec /_/wan/fhir/$rest; }}
        location ~ ^(/_)?/(?<tree>[a-z0-9]+)/fhir/(?<rtype>[A-Za-z]+)$ {{ try_files /$tree/search/$rtype.json =404; }}
        location ~ ^(/_)?/(?<tree>[a-z0-9]+)/fhir/(?<rtype>[A-Za-z]+)/(?<rid>[A-Za-z0-9.-]+)$ {{
            try_files /$tree/read/$rtype/$rid.json =404;
        }}
    }}
"""

_REVERSE_PROXY = """
    upstream {name} {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}
"""


class Nginx:
    """One nginx process; `start` blocks until every port it was given accepts connections."""

    def __init__(self, prefix: Path, servers: str, ports: list[int], modules: tuple[Path, ...] = ()) -> None:
        self.prefix, self.ports = prefix, ports
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        loads = "\n".join(f"load_module {m};" for m in modules)
        self.conf.write_text(_COMMON.format(modules=loads, prefix=prefix, servers=servers))
        self._popen: subprocess.Popen | None = None

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        log = (self.prefix / "stderr.log").open("ab")
        self._popen = subprocess.Popen([binary, "-p", str(self.prefix), "-c", str(self.conf),
                                        "-e", str(self.prefix / "error.log")],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(port_open(p) for p in self.ports):
            if self._popen.poll() is not None or time.monotonic() > deadline:
                error = (self.prefix / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nginx did not start ({self.conf}):\n{error}")
            time.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        assert self._popen is not None
        return self._popen.pid

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()


def static_provider(prefix: Path, www: Path) -> tuple[Nginx, int]:
    """Serves `www/<tree>/search/<Type>.json` at `/<tree>/fhir/<Type>` and reads at `/<tree>/fhir/<Type>/<id>`;
    the `wan` tree answers WAN_DELAY_S later (echo_sleep: a timer, nginx keeps serving meanwhile), like
    a provider one network round trip away."""
    port = free_port()
    return Nginx(prefix, _PROVIDER.format(port=port, www=www, delay=WAN_DELAY_S), [port], (ECHO_MODULE,)), port


def reverse_proxy(prefix: Path, upstreams: dict[str, str]) -> tuple[Nginx, dict[str, int]]:
    """One listening port per upstream (`host:port`), each a keep-alive reverse proxy to it."""
    ports = {name: free_port() for name in upstreams}
    servers = "".join(_REVERSE_PROXY.format(name=name, upstream=upstream, port=ports[name])
                      for name, upstream in upstreams.items())
    return Nginx(prefix, servers, list(ports.values())), ports
