"""A package "upstream" on 127.0.0.1: serves a directory like an Arch mirror, with faults.

Test helper (I/O: a threaded HTTP server). It serves the stand-in's `upstream/www` tree
(tests/standin/build-standin.sh) or any directory: GET and HEAD with `Range`, `ETag`,
`Last-Modified` and conditional requests (304), links followed inside the root only,
bodies sent with sendfile(2). A path prefix turns a mirror bad:

    /fail500/<path>   answers 500
    /hang/<path>      accepts the request and never answers (a timeout)
    /corrupt/<path>   serves package files with one byte flipped
    /drop/<path>      the first request of each path gets half the body, then the
                      connection closes (resume); later requests are served whole

Every answer is recorded (`requests`): path, status and body bytes sent.
"""

from __future__ import annotations

import email.utils
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

STANDIN = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))
#: The stand-in's upstream: `www/` served, `keyring/` trusting its packager key.
UPSTREAM = STANDIN / "upstream"
_FAULTS = ("fail500", "hang", "corrupt", "drop")


@dataclass(frozen=True, slots=True)
class Served:
    """One answer: the path asked (fault prefix included), status, body bytes sent."""

    path: str
    status: int
    body_bytes: int


class UpstreamServer(ThreadingHTTPServer):
    """The server; `url` is its base URL. Use `serve_upstream` to run one."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.requests: list[Served] = []
        self.lock = threading.Lock()
        self.dropped: set[str] = set()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, path: str, status: int, body_bytes: int) -> None:
        """Remember one answer."""
        with self.lock:
            self.requests.append(Served(path, status, body_bytes))

    def since(self, start: int) -> list[Served]:
        """The answers after the first `start` ones."""
        with self.lock:
            return self.requests[start:]

    def package_bytes(self, start: int = 0) -> int:
        """Body bytes sent for package files (`.pkg.tar.*`, signatures excluded)."""
        return sum(
            r.body_bytes
            for r in self.since(start)
            if ".pkg.tar." in r.path and not r.path.endswith(".sig")
        )

    def body_bytes(self, start: int = 0) -> int:
        """Body bytes sent in all."""
        return sum(r.body_bytes for r in self.since(start))


class _Handler(BaseHTTPRequestHandler):
    server: UpstreamServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read `requests`."""

    def do_HEAD(self) -> None:
        """Answer HEAD like GET without the body."""
        self._serve(body=False)

    def do_GET(self) -> None:
        """Answer GET (see the module docstring)."""
        self._serve(body=True)

    def _fail(self, status: int, path: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.record(path, status, 0)

    def _serve(self, *, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        parts = path.lstrip("/").split("/", 1)
        fault = parts[0] if parts[0] in _FAULTS else None
        rest = parts[1] if fault and len(parts) > 1 else path.lstrip("/")
        if fault == "fail500":
            self._fail(500, path)
            return
        if fault == "hang":
            self.server.release.wait(120)
            self.close_connection = True
            return
        target = (self.server.root / rest).resolve()
        if not target.is_relative_to(self.server.root) or not target.is_file():
            self._fail(404, path)
            return
        st = target.stat()
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        if self.headers.get("If-None-Match") == etag or (
            self.headers.get("If-None-Match") is None
            and self.headers.get("If-Modified-Since") == modified
        ):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            self.server.record(path, 304, 0)
            return
        start, end = 0, st.st_size
        status = 200
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-") and wanted[6:-1].isdigit():
            start = int(wanted[6:-1])
            if start >= st.st_size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{st.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.server.record(path, 416, 0)
                return
            status = 206
        length = end - start
        drop = False
        if fault == "drop":
            with self.server.lock:
                drop = path not in self.server.dropped
                self.server.dropped.add(path)
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", modified)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{st.st_size}")
        self.end_headers()
        if not body:
            self.server.record(path, status, 0)
            return
        sent = self._send_body(target, start, length, corrupt=fault == "corrupt", drop=drop)
        self.server.record(path, status, sent)
        if drop:
            self.close_connection = True

    def _send_body(
        self, target: Path, start: int, length: int, *, corrupt: bool, drop: bool
    ) -> int:
        self.wfile.flush()
        if drop:
            length //= 2
        with target.open("rb") as handle:
            if corrupt and ".pkg.tar." in target.name and not target.name.endswith(".sig"):
                handle.seek(start)
                data = bytearray(handle.read(length))
                if data:
                    data[len(data) // 2] ^= 0xFF
                self.wfile.write(data)
                return len(data)
            sent = 0
            sock = self.connection
            while sent < length:
                count = os.sendfile(sock.fileno(), handle.fileno(), start + sent, length - sent)
                if count == 0:
                    break
                sent += count
            return sent


@contextmanager
def serve_upstream(root: Path) -> Iterator[UpstreamServer]:
    """Serve `root` on 127.0.0.1 for the duration of the block."""
    server = UpstreamServer(root)
    thread = threading.Thread(target=server.serve_forever, name="upstream", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
