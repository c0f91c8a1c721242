"""A stand-in Alertmanager webhook receiver: prints one JSON line per alert it is sent.

docker-compose.yml runs it as `alert-receiver` so the example routing can be watched
(`docker compose logs -f alert-receiver`) before real receivers are configured; the
end-to-end test runs it on loopback to see what Alertmanager delivered, and where.
Usage: python3 webhook_logger.py [HOST:]PORT
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 1024 * 1024
OUTPUT_LOCK = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self.send_error(400, "expected a JSON body of at most 1 MiB")
            return
        try:
            notification = json.loads(self.rfile.read(length))
            alerts = notification["alerts"]
        except (ValueError, KeyError, TypeError):
            self.send_error(400, "not an Alertmanager webhook notification")
            return
        lines = []
        for alert in alerts:
            labels = alert.get("labels", {})
            lines.append(json.dumps({"path": self.path, "receiver": notification.get("receiver"),
                                     "status": alert.get("status"), "alertname": labels.get("alertname"),
                                     "severity": labels.get("severity"), "state": labels.get("state"),
                                     "target": labels.get("target"),
                                     "summary": alert.get("annotations", {}).get("summary")}) + "\n")
        with OUTPUT_LOCK:  # requests are served by several threads; keep each line whole
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args) -> None:
        pass  # one line per alert is the output; no access log


def main(argv: list[str]) -> int:
    host, _, port = (argv[1] if len(argv) > 1 else "5001").rpartition(":")
    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Receiver)
    print(json.dumps({"listening": f"{host or '0.0.0.0'}:{server.server_address[1]}"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
