"""What the Python stand-ins of the controller tests share
(session/fake_google.py, session/fake_sso.py, federation/peers.py): a
request handler base that logs nothing, a JSON answer, and the loopback
server that runs a handler. The stand-ins find this module by their own
path (its directory, their parent, goes on sys.path), so they run from any
working directory with no PYTHONPATH. Never logs a request or a token."""

import http.server
import json


class Quiet(http.server.BaseHTTPRequestHandler):
    """A handler that writes no access log (tokens travel in requests)."""

    def log_message(self, *args):
        pass


def answer(handler, status, doc):
    """Send `doc` as a JSON response with `status`."""
    data = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def serve(handler, port, context=None):
    """Serve `handler` on 127.0.0.1:`port` (TLS with `context`), printing
    "ready" once it listens; never returns."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()
