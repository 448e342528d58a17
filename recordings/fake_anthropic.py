#!/usr/bin/env python3
"""A stand-in for the Anthropic API, used only to make the bundled recordings.

It answers the shapes the real API answers (GET /v1/models, POST /v1/messages with and
without "stream": true as server-sent events, GET /api/oauth/usage) so the recordings in
this folder look like real traffic. Prints "listening on http://127.0.0.1:PORT" first.
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "claude-sonnet-4-5"


def message(text):
    return {
        "id": "msg_01demo",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 9},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, obj, extra=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("request-id", "req_01demo")
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/v1/models"):
            self.send_json(200, {"data": [{"type": "model", "id": MODEL,
                                           "display_name": "Claude Sonnet 4.5"}],
                                 "has_more": False})
        elif self.path.startswith("/api/oauth/usage"):
            self.send_json(200, {"five_hour": {"utilization": 86.0,
                                               "resets_at": "2026-11-24T17:00:00+00:00"},
                                 "seven_day": {"utilization": 40.0,
                                               "resets_at": "2026-11-28T09:00:00+00:00"},
                                 "seven_day_opus": {"utilization": None, "resets_at": None}})
        else:
            self.send_json(404, {"type": "error",
                                 "error": {"type": "not_found_error", "message": "Not found"}})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        text = "Hello from the demo recording."
        if not req.get("stream"):
            self.send_json(200, message(text))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        start = dict(message(""), content=[], stop_reason=None)
        events = [("message_start", {"type": "message_start", "message": start}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})]
        for word in ["Hello", " from", " the", " demo", " stream."]:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta",
                                                             "text": word}}))
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": "end_turn",
                                                "stop_sequence": None},
                                      "usage": {"output_tokens": 9}}),
                   ("message_stop", {"type": "message_stop"})]
        for name, data in events:
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            time.sleep(0.08)  # the pace a real stream has; replay reproduces it
        self.wfile.write(b"0\r\n\r\n")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
