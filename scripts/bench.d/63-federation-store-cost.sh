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
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../lib.sh"
pinned_store_bench 63-federation-store-cost "$(bao version 2>/dev/null | head -1)"
store_cost_load 2000 <<'PY'
import base64, json, os, sys
from store_cost import Store
store = Store.from_argv()
c, call, ok = store.conn, store.call, store.ok
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
N = store.n
batch = login(plain)["client_token"]
def run(name, fn, n=None):
    store.run("   " + name, fn, n, width=58)
run("GET data/manifest, batch token (a poll)", lambda cc, i: call(cc, "GET", base + "/manifest", batch)[0])
for alg in ["RS256", "ES256", "EdDSA"]:
    run(f"GET identity/oidc/token ({alg}), batch token", lambda cc, i, alg=alg: call(cc, "GET", f"identity/oidc/token/rh-c-{alg}", batch)[0])
run("login, batch role, secret_id without metadata", lambda cc, i: call(cc, "POST", "auth/approle/login", None, {"role_id": rid, "secret_id": plain})[0], n=N // 2)
run("login, batch role, 2 nodes' metadata alternating", lambda cc, i: call(cc, "POST", "auth/approle/login", None, {"role_id": rid, "secret_id": sa if i % 2 else sb})[0], n=N // 4)
run("GET identity/oidc/.well-known/keys (no token)", lambda cc, i: call(cc, "GET", "identity/oidc/.well-known/keys")[0], n=N // 2)
PY
echo "63-federation-store-cost: after: $(uptime)"
