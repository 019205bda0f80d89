"""A loopback HTTP server standing in for a data mirror, shared by the data-source tests."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves `root`; under /short/NAME it announces good/NAME's full size but sends half."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/short/"):
            return super().do_GET()
        body = Path(self.directory, "good", self.path.rsplit("/", 1)[-1]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve the folder `root` on 127.0.0.1 for the block; yields its base URL (no trailing slash)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
