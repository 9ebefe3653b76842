"""Protocol peers for the workload identity tests (controller/tests/federation.rs).

Standard libraries, not the project's code, check what the node does:

  verify FILE --jwks URL|FILE --issuer I --aud A --sub S --cluster C [--no-exp]
      PyJWT verifies the token in FILE against the store's JWKS (signature,
      iss, aud, exp) and its claims; prints the claims as JSON.
  aws-check
      boto3 from the environment (an env process) or ~/.aws/config (a plain
      shell): prints the credential method and get_caller_identity's Arn.
  aws-loop --seconds N --jwks FILE
      boto3 in a loop, each time a fresh session (the token file read again)
      and the token verified with PyJWT: prints a JSON summary (calls,
      failures, distinct tokens seen).
  gcp-sts --port P --jwks URL --issuer I --log FILE
      A stand-in for Google's STS (the external_account token_url) and IAM
      credentials API: verifies the subject token against the JWKS before it
      answers, and a /resource that accepts only the tokens it issued.
  gcp-check --resource URL
      google-auth's Application Default Credentials (identity_pool): refresh,
      then call the resource with the token google-auth holds.
  azure-authority --port P --cert FILE --jwks URL --issuer I --tenant T --client C --log FILE
      A stand-in for Entra ID's token endpoint (AZURE_AUTHORITY_HOST, https
      with a self-signed certificate written to FILE): verifies the client
      assertion against the JWKS before it answers.
  azure-check
      azure-identity's WorkloadIdentityCredential from the environment.

Servers print "ready" on stdout once they listen. Tokens are never printed
by the checks; only their claims, methods and the stand-ins' own tokens.
"""

import argparse
import datetime
import hashlib
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

import jwt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from stand_in import Quiet, answer, serve  # noqa: E402


def jwks_client(source):
    if source.startswith("http"):
        return jwt.PyJWKClient(source, cache_keys=False)
    with open(source) as f:
        keys = json.load(f)
    return jwt.PyJWKSet.from_dict(keys)


def signing_key(source, token):
    client = jwks_client(source)
    if isinstance(client, jwt.PyJWKClient):
        return client.get_signing_key_from_jwt(token).key
    kid = jwt.get_unverified_header(token)["kid"]
    return client[kid].key


def verify_token(token, jwks, issuer, aud, sub=None, cluster=None, exp=True):
    alg = jwt.get_unverified_header(token)["alg"]
    claims = jwt.decode(
        token,
        signing_key(jwks, token),
        algorithms=[alg],
        audience=aud,
        issuer=issuer,
        options={"verify_exp": exp, "require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    if sub is not None and claims["sub"] != sub:
        raise ValueError(f"sub {claims['sub']!r} is not {sub!r}")
    if cluster is not None and claims.get("cluster") != cluster:
        raise ValueError(f"cluster {claims.get('cluster')!r} is not {cluster!r}")
    return claims


def cmd_verify(a):
    with open(a.file) as f:
        token = f.read()
    claims = verify_token(token, a.jwks, a.issuer, a.aud, a.sub, a.cluster, not a.no_exp)
    claims["_alg"] = jwt.get_unverified_header(token)["alg"]
    print(json.dumps(claims, sort_keys=True))


def cmd_aws_check(_a):
    import boto3

    session = boto3.Session()
    creds = session.get_credentials()
    arn = session.client("sts").get_caller_identity()["Arn"]
    print(json.dumps({"method": creds.method, "arn": arn}))


def cmd_aws_loop(a):
    import boto3

    end = time.time() + a.seconds
    calls = failures = 0
    tokens = set()
    errors = []
    path = os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"]
    while time.time() < end:
        calls += 1
        try:
            with open(path) as f:
                token = f.read()
            verify_token(token, a.jwks, a.issuer, "sts.amazonaws.com")
            tokens.add(hashlib.sha256(token.encode()).hexdigest())
            session = boto3.Session()
            arn = session.client("sts").get_caller_identity()["Arn"]
            if ":assumed-role/" not in arn or session.get_credentials().method != "assume-role-with-web-identity":
                raise ValueError("not the web identity role")
        except Exception as e:  # counted, named by type only
            failures += 1
            errors.append(type(e).__name__)
        time.sleep(a.interval)
    print(json.dumps({"calls": calls, "failures": failures, "tokens": len(tokens), "errors": errors[:5]}))


class Log:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def write(self, entry):
        with self.lock, open(self.path, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")


def form(handler):
    length = int(handler.headers.get("Content-Length", 0))
    body = handler.rfile.read(length).decode()
    ctype = handler.headers.get("Content-Type", "")
    if "json" in ctype:
        return json.loads(body)
    return {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}


def cmd_gcp_sts(a):
    log = Log(a.log)
    issued = set()
    counter = [0]

    def new_token(kind):
        counter[0] += 1
        token = f"gcp-{kind}-{counter[0]}-{os.urandom(6).hex()}"
        issued.add(token)
        return token

    class Handler(Quiet):
        def do_POST(self):
            if self.path == "/v1/token":
                f = form(self)
                try:
                    if f.get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt":
                        raise ValueError("subject_token_type")
                    claims = verify_token(f["subject_token"], a.jwks, a.issuer, "https:" + f["audience"])
                except Exception as e:
                    log.write({"endpoint": "sts", "ok": False, "error": type(e).__name__ + ": " + str(e)[:200]})
                    return answer(self, 400, {"error": "invalid_grant", "error_description": "subject token rejected"})
                token = new_token("sts")
                log.write({"endpoint": "sts", "ok": True, "sub": claims["sub"], "aud": claims["aud"], "cluster": claims.get("cluster"), "issued": token})
                return answer(self, 200, {"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600})
            if self.path.endswith(":generateAccessToken"):
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if bearer not in issued:
                    log.write({"endpoint": "impersonate", "ok": False})
                    return answer(self, 401, {"error": {"message": "unknown token"}})
                sa = self.path.split("/serviceAccounts/")[1].split(":")[0]
                token = new_token("sa")
                log.write({"endpoint": "impersonate", "ok": True, "service_account": sa, "issued": token})
                expire = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
                return answer(self, 200, {"accessToken": token, "expireTime": expire})
            answer(self, 404, {})

        def do_GET(self):
            if self.path == "/resource":
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                ok = bearer in issued
                log.write({"endpoint": "resource", "ok": ok, "token": bearer if ok else None})
                return answer(self, 200 if ok else 401, {"ok": ok})
            answer(self, 404, {})

    serve(Handler, a.port)


def cmd_gcp_check(a):
    import google.auth
    from google.auth.transport.requests import AuthorizedSession, Request

    creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    creds.refresh(Request())
    status = AuthorizedSession(creds).get(a.resource).status_code
    print(json.dumps({"type": type(creds).__module__ + "." + type(creds).__name__, "token": creds.token, "resource": status}))


def self_signed(cert_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    key_path = cert_path + ".key"
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return key_path


def cmd_azure_authority(a):
    log = Log(a.log)
    key_path = self_signed(a.cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(a.cert, key_path)

    class Handler(Quiet):
        def do_POST(self):
            if self.path != f"/{a.tenant}/oauth2/v2.0/token":
                log.write({"endpoint": "token", "ok": False, "error": "path " + self.path})
                return answer(self, 404, {"error": "invalid_request"})
            f = form(self)
            try:
                if f.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                    raise ValueError("client_assertion_type")
                if f.get("client_id") != a.client:
                    raise ValueError("client_id")
                claims = verify_token(f["client_assertion"], a.jwks, a.issuer, "api://AzureADTokenExchange", a.sub)
            except Exception as e:
                log.write({"endpoint": "token", "ok": False, "error": type(e).__name__ + ": " + str(e)[:200]})
                return answer(self, 400, {"error": "invalid_client", "error_description": "assertion rejected"})
            token = "azure-" + os.urandom(8).hex()
            log.write({"endpoint": "token", "ok": True, "sub": claims["sub"], "cluster": claims.get("cluster"), "scope": f.get("scope"), "issued": token})
            return answer(self, 200, {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": token})

    serve(Handler, a.port, context)


def cmd_azure_check(_a):
    from azure.identity import WorkloadIdentityCredential

    token = WorkloadIdentityCredential().get_token("https://management.azure.com/.default")
    print(json.dumps({"token": token.token}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify")
    v.add_argument("file")
    for name in ["--jwks", "--issuer", "--aud"]:
        v.add_argument(name, required=True)
    v.add_argument("--sub")
    v.add_argument("--cluster")
    v.add_argument("--no-exp", action="store_true")
    sub.add_parser("aws-check")
    loop = sub.add_parser("aws-loop")
    loop.add_argument("--seconds", type=float, required=True)
    loop.add_argument("--interval", type=float, default=1.0)
    loop.add_argument("--jwks", required=True)
    loop.add_argument("--issuer", required=True)
    g = sub.add_parser("gcp-sts")
    g.add_argument("--port", type=int, required=True)
    for name in ["--jwks", "--issuer", "--log"]:
        g.add_argument(name, required=True)
    gc = sub.add_parser("gcp-check")
    gc.add_argument("--resource", required=True)
    az = sub.add_parser("azure-authority")
    az.add_argument("--port", type=int, required=True)
    for name in ["--cert", "--jwks", "--issuer", "--tenant", "--client", "--sub", "--log"]:
        az.add_argument(name, required=True)
    sub.add_parser("azure-check")
    a = p.parse_args()
    {
        "verify": cmd_verify,
        "aws-check": cmd_aws_check,
        "aws-loop": cmd_aws_loop,
        "gcp-sts": cmd_gcp_sts,
        "gcp-check": cmd_gcp_check,
        "azure-authority": cmd_azure_authority,
        "azure-check": cmd_azure_check,
    }[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
