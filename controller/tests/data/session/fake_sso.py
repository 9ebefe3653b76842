"""A local stand-in for the IAM Identity Center (SSO) portal API's
GetRoleCredentials (moto has none), on 127.0.0.1:PORT: answers the cached
SSO access token ACCESS_TOKEN with role credentials whose access key id is
KEY_ID, valid for an hour. Usage: fake_sso.py PORT ACCESS_TOKEN KEY_ID"""
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from stand_in import Quiet, answer, serve  # noqa: E402

PORT, TOKEN, KEY_ID = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(Quiet):
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
        answer(self, code, doc)


serve(Handler, PORT)
