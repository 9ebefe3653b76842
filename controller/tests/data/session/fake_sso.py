"""A local stand-in for the IAM Identity Center (SSO) portal API's
GetRoleCredentials (moto has none), on 127.0.0.1:PORT: answers the cached
SSO access token ACCESS_TOKEN with role credentials whose access key id is
KEY_ID, valid for an hour. Usage: fake_sso.py PORT ACCESS_TOKEN KEY_ID"""
import json
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, TOKEN, KEY_ID = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path != "/federation/credentials" or self.headers.get("x-amz-sso_bearer_token") != TOKEN:
            code, doc = 401, {"message": "Session token not found or invalid"}
        else:
            code, doc = 200, {"roleCredentials": {
                "accessKeyId": KEY_ID,
                "secretAccessKey": "sso-role-secret-" + query["role_name"][0],
                "sessionToken": "sso-session-token",
                "expiration": int((time.time() + 3600) * 1000),
            }}
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
