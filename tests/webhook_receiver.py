"""A webhook receiver for tests: a real HTTP server on loopback that records every delivery."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from paygate.webhooks import verify_webhook


class Receiver:
    """Answers `status` (settable) after `delay_s`; `received` holds (headers, body) in arrival order."""

    def __init__(self) -> None:
        self.status = 200
        self.delay_s = 0.0
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()  # set at each delivery's arrival, before its answer
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers.items()), body))
                receiver.arrived.set()
                time.sleep(receiver.delay_s)
                try:
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up (or died) meanwhile

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def events(self, secrets: list[str]) -> list[dict[str, Any]]:
        """Every delivery, verified (raises on a bad signature), in arrival order."""
        return [verify_webhook(headers, body, secrets) for headers, body in list(self.received)]

    def event_ids(self) -> list[str]:
        return [headers["Paygate-Event-Id"] for headers, _ in list(self.received)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
