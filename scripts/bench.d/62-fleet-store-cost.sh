#!/usr/bin/env bash
# Benchmark: what the store spends per request kind of fleet mode, in
# isolation. One OpenBao Raft node pinned to CPU 0 (`taskset`), the load
# generator (python, 4 keep-alive connections) on CPU 1; for each kind, the
# store's own CPU time (from /proc, user+sys) divided by the requests sent:
# a manifest read (`data/` as the agent does, `metadata/`), over a fresh TCP
# connection per request, with a service token (with and without the
# `default` policy), an AppRole login (batch token with an unlimited or a
# use-limited secret_id, service token), a node report write. CPU per
# request does not depend on the generator's speed. FLEET_COST_N: requests
# per kind (default 3000). Needs 2 CPUs and `bao`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../lib.sh"
pinned_store_bench 62-fleet-store-cost
store_cost_load 3000 <<'PY'
import http.client, json, sys, threading, time, os
from store_cost import Store
st = Store.from_argv()
root = st.root
cpu, call, run = st.cpu, st.call, st.run
def ok(m,p,b=None,tok=root):
    return st.ok(m,p,b,tok)
base="secret/data/rh/b/clusters/c"
pol='path "secret/data/rh/b/clusters/c/manifest" { capabilities=["read"] }\npath "secret/metadata/rh/b/clusters/c/manifest" { capabilities=["read"] }\npath "secret/data/rh/b/clusters/c/nodes/*" { capabilities=["create","update"] }\n'
ok("PUT","sys/policies/acl/c",{"policy":pol})
ok("POST","auth/approle/role/c",{"token_policies":["c"],"token_type":"batch","token_ttl":3600,"token_max_ttl":3600,"token_no_default_policy":True,"secret_id_num_uses":0})
ok("POST","auth/approle/role/cs",{"token_policies":["c"],"token_type":"service","token_ttl":3600,"secret_id_num_uses":0})
rid=ok("GET","auth/approle/role/c/role-id")["data"]["role_id"]
rids=ok("GET","auth/approle/role/cs/role-id")["data"]["role_id"]
sid=ok("POST","auth/approle/role/c/secret-id",{})["data"]["secret_id"]
sidl=ok("POST","auth/approle/role/c/secret-id",{"num_uses":1000000})["data"]["secret_id"]
sids=ok("POST","auth/approle/role/cs/secret-id",{})["data"]["secret_id"]
man={"version":3,"published_at":"2026-11-30T00:00:00Z","secrets":[{"name":"s%d"%i,"kv_version":1,"fingerprint":"f"*64} for i in range(3)]}
ok("POST",base+"/manifest",{"data":man})
ok("POST","secret/metadata/rh/b/clusters/c/manifest",{"custom_metadata":{"version":"3"}})
batch=ok("POST","auth/approle/login",{"role_id":rid,"secret_id":sid},None)["auth"]["client_token"]
svc=ok("POST","auth/approle/login",{"role_id":rids,"secret_id":sids},None)["auth"]["client_token"]
svcdef=ok("POST","auth/token/create",{"policies":["c"]})["auth"]["client_token"]
N=st.n
c0=cpu(); time.sleep(5)
print(f"{'idle, no requests (Raft node alone)':58s} store {100*(cpu()-c0)/5:5.1f}% of one core", flush=True)
run("GET sys/health (no token, floor)", lambda cc,i: call(cc,"GET","sys/health")[0])
run("GET data/manifest, batch token (agent today)", lambda cc,i: call(cc,"GET",base+"/manifest",batch)[0])
run("GET metadata/manifest, batch token", lambda cc,i: call(cc,"GET","secret/metadata/rh/b/clusters/c/manifest",batch)[0])
run("GET data/manifest, batch, new TCP conn per request", lambda cc,i: call(cc,"GET",base+"/manifest",batch)[0], fresh=True)
run("GET data/manifest, service token (no default policy)", lambda cc,i: call(cc,"GET",base+"/manifest",svc)[0])
run("GET data/manifest, service token + default policy", lambda cc,i: call(cc,"GET",base+"/manifest",svcdef)[0])
run("login, batch role, unlimited secret_id", lambda cc,i: call(cc,"POST","auth/approle/login",None,{"role_id":rid,"secret_id":sid})[0], n=N//2)
run("login, batch role, use-limited secret_id", lambda cc,i: call(cc,"POST","auth/approle/login",None,{"role_id":rid,"secret_id":sidl})[0], n=N//4)
run("login, service role, unlimited secret_id", lambda cc,i: call(cc,"POST","auth/approle/login",None,{"role_id":rids,"secret_id":sids})[0], n=N//4)
rep={"data":{"node_id":"n","applied_version":3,"reported_at":1,"last_poll":1,"secrets":["s0","s1"]}}
run("POST data/nodes/<id> report write, batch token", lambda cc,i: call(cc,"POST",base+"/nodes/n%d"%(i%500),batch,rep)[0], n=N//4)
# A node's report key ages: past the mount's 10 kept versions every write
# also prunes the oldest one. The same writes on keys already holding 10
# versions, and on keys whose metadata keeps 1.
for i in range(100):
    ok("POST","secret/metadata/rh/b/clusters/c/nodes/m%d"%i,{"max_versions":1})
    for _ in range(10):
        ok("POST",base+"/nodes/a%d"%i,rep); ok("POST",base+"/nodes/m%d"%i,rep)
run("report write, key already at 10 versions (prunes one)", lambda cc,i: call(cc,"POST",base+"/nodes/a%d"%(i%100),batch,rep)[0], n=N//4)
run("report write, key with max_versions=1", lambda cc,i: call(cc,"POST",base+"/nodes/m%d"%(i%100),batch,rep)[0], n=N//4)
PY
echo "62-fleet-store-cost: after: $(uptime)"
