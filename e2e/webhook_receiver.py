"""A webhook receiver for chute's tests: every delivery's signature is checked by the
`standardwebhooks` package (the reference implementation), never by chute's code.

Usage: webhook_receiver.py SECRET [PORT [DELAY_MS]]
Prints the port it listens on, then serves:
  POST /hook        a delivery: verified, recorded, answered 204 (or 500 while told to fail)
  GET /deliveries   {"deliveries": [{"id", "type", "timestamp", "data", "status"}...],
                     "invalid": [reasons of deliveries that failed verification]}
  POST /fail        body: a number N; the next N valid deliveries are answered 500
  POST /rules       body: a JSON list of {"type", "match", "status", "body", "delay_ms"}: a
                    verified delivery of that type whose body contains `match` (a substring,
                    "" for any) is answered `status` with `body` after `delay_ms`; the first
                    rule that matches wins; with none, 204
DELAY_MS: each delivery is answered that long after it arrived (a slow receiver).
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
DELAY = int(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0
HOOK = Webhook(SECRET)
LOCK = threading.Lock()
DELIVERIES = []
INVALID = []
FAIL = [0]
RULES = []


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as real receivers do (every reply has a Content-Length).
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/deliveries":
            return self.reply(404)
        with LOCK:
            body = json.dumps({"deliveries": DELIVERIES, "invalid": INVALID}).encode()
        self.reply(200, body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/fail":
            with LOCK:
                FAIL[0] = int(body.decode() or "0")
            return self.reply(204)
        if self.path == "/rules":
            with LOCK:
                RULES[:] = json.loads(body)
            return self.reply(204)
        if self.path != "/hook":
            return self.reply(404)
        headers = {k.lower(): v for k, v in self.headers.items()}
        time.sleep(DELAY)
        try:
            payload = HOOK.verify(body, headers)
        except WebhookVerificationError as e:
            with LOCK:
                INVALID.append(str(e))
            return self.reply(400)
        text = body.decode()
        with LOCK:
            rule = next(
                (r for r in RULES if r["type"] == payload["type"] and r.get("match", "") in text),
                None,
            )
            status = 500 if FAIL[0] > 0 else 204
            if FAIL[0] > 0:
                FAIL[0] -= 1
            answer = b""
            if rule is not None:
                status = rule.get("status", 200)
                answer = rule.get("body", "").encode()
            DELIVERIES.append(
                {
                    "id": headers["webhook-id"],
                    "type": payload["type"],
                    "timestamp": payload["timestamp"],
                    "data": payload["data"],
                    "status": status,
                }
            )
        if rule is not None and rule.get("delay_ms"):
            time.sleep(rule["delay_ms"] / 1000)
        self.reply(status, answer)


class Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 drops the SYNs of a sender's concurrent deliveries, each
    # then waiting a second for its retransmission.
    request_queue_size = 128
    daemon_threads = True

    def handle_error(self, request, client_address):
        # chute hangs up on a receiver slower than its hook timeout, as the timeout tests
        # ask; the write that finds the socket closed is not news. Anything else is printed.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


server = Server(("127.0.0.1", PORT), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
