"""In an env process: google.auth.default() against the agent's metadata
server (GCE_METADATA_HOST); prints the credentials' class, project and
whether the token equals the expected one (the token is not printed).
Usage: gcp_default.py EXPECTED_TOKEN"""
import json
import sys

import google.auth
import google.auth.transport.requests

creds, project = google.auth.default()
creds.refresh(google.auth.transport.requests.Request())
print(json.dumps({
    "class": type(creds).__module__ + "." + type(creds).__name__,
    "project": project,
    "token_matches": creds.token == sys.argv[1],
}))
