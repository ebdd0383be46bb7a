"""Local stand-ins for the network around the Hugging Face hub, on real sockets and the real protocol: the hub's file
endpoint (``HubServer``), a forwarding HTTP proxy that records what it forwarded (``ForwardingProxy``), an endpoint
that accepts connections and never answers (``silent_endpoint``) and a port that refuses them (``refused_url``).

``HubServer`` answers ``HEAD``/``GET /<repo_id>/resolve/<revision>/<filename>`` with the headers huggingface_hub reads
(``X-Repo-Commit``, ``ETag``, ``Content-Length``; 0.2x, 1.x and 2.x alike) and, for a missing file, 404 with
``X-Error-Code: EntryNotFound`` (``hf_raise_for_status`` turns it into EntryNotFoundError); an unknown repo gets
``X-Error-Code: RepoNotFound``.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>[^?]+)")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "transfer-encoding", "upgrade"}


PROXY_VARS = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


def point_hub_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point huggingface_hub at ``url`` in this process as HF_ENDPOINT does at import, and in the processes it starts.
    ENDPOINT alone is not enough: ``hf_hub_url`` formats HUGGINGFACE_CO_URL_TEMPLATE, made from ENDPOINT at import,
    and rewrites it only where it starts with ENDPOINT; 0.2x keep copies of both in ``file_download``."""
    from huggingface_hub import constants, file_download

    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    for module in (constants, file_download):
        for name, value in (("ENDPOINT", url), ("HUGGINGFACE_CO_URL_TEMPLATE", template)):
            if module is constants or hasattr(module, name):
                monkeypatch.setattr(module, name, value)
    monkeypatch.setenv("HF_ENDPOINT", url)


def reset_hub_session() -> None:
    """Drop huggingface_hub's shared HTTP session, so the next one reads the proxy variables again (httpx reads them
    when the client is made; requests on every request): ``close_session`` from 1.x on, ``reset_sessions`` in 0.2x."""
    from huggingface_hub import utils

    (getattr(utils, "close_session", None) or utils.reset_sessions)()


class _Served(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.seen: list[tuple[str, str]] = []  # (method, path or absolute URL) of every request, in order
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> _Served:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and close the listening socket (later connections are refused)."""
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


class _HubHandler(_Quiet):
    server: HubServer

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        self.server.seen.append((self.command, self.path))
        match = RESOLVE.match(self.path)
        files = self.server.repos.get(match["repo"]) if match else None
        if files is None:
            return self._error(404, "RepoNotFound")
        content = files.get(match["filename"])
        if content is None:
            return self._error(404, "EntryNotFound")
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(content)

    def _error(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", f"{code} (tests/hubserver.py)")
        if code == "EntryNotFound":
            self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()


class HubServer(_Served):
    """The hub's file endpoint for ``repos`` ({repo_id: {filename: bytes}}) at ``self.url``; a context manager."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        super().__init__(_HubHandler)
        self.repos = repos


class _ProxyHandler(_Quiet):
    server: ForwardingProxy

    def do_HEAD(self) -> None:
        self._forward()

    def do_GET(self) -> None:
        self._forward()

    def _forward(self) -> None:
        self.server.seen.append((self.command, self.path))  # a proxy gets the absolute URL
        target = urlsplit(self.path)
        host, _, port = self.server.upstreams.get(target.netloc, target.netloc).partition(":")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(host, int(port or 80), timeout=10)
        try:
            upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""), None, headers)
            response = upstream.getresponse()
            content = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)
        except OSError as err:
            self.send_error(502, f"tests/hubserver.py proxy: {err}")
        finally:
            upstream.close()


class ForwardingProxy(_Served):
    """A plain-HTTP forwarding proxy at ``self.url`` that records each request in ``self.seen``; ``upstreams``
    ({'host:port' asked for: 'host:port' connected to}) lets it reach a host its clients cannot (as a proxy does)."""

    def __init__(self, upstreams: dict[str, str] | None = None) -> None:
        super().__init__(_ProxyHandler)
        self.upstreams = upstreams or {}


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """URL of a socket that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def refused_url() -> str:
    """URL of a loopback port that was just free: connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
