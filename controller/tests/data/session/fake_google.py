"""A local stand-in for Google's OAuth token endpoint and IAM Credentials
generateAccessToken, on 127.0.0.1:PORT. Exchanges the refresh token named
in the ADC fixture for ACCESS_TOKEN; counts requests in COUNT_FILE.
Usage: fake_google.py PORT REFRESH_TOKEN ACCESS_TOKEN COUNT_FILE"""
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from stand_in import Quiet, answer, serve  # noqa: E402

PORT, REFRESH, ACCESS, COUNT = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


class Handler(Quiet):
    def do_POST(self):
        with open(COUNT, "a") as f:
            f.write(self.path + "\n")
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if self.path == "/token":
            form = urllib.parse.parse_qs(body)
            if form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [REFRESH]:
                return answer(self, 200, {"access_token": ACCESS, "expires_in": 3599,
                                          "token_type": "Bearer", "scope": "openid https://www.googleapis.com/auth/cloud-platform"})
            return answer(self, 400, {"error": "invalid_grant"})
        if self.path.endswith(":generateAccessToken"):
            if self.headers.get("Authorization") != "Bearer " + ACCESS:
                return answer(self, 401, {"error": {"status": "UNAUTHENTICATED"}})
            exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            return answer(self, 200, {"accessToken": "impersonated-" + ACCESS, "expireTime": exp})
        return answer(self, 404, {"error": "not_found"})


serve(Handler, PORT)
