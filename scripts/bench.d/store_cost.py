"""Helpers of the store-cost benchmarks (62-fleet-store-cost.sh and
63-federation-store-cost.sh, run by lib.sh's store_cost_load with this
folder on the path): one OpenBao
node's CPU time from /proc, one API call over a kept connection, and a
measured run of N requests over T keep-alive connections (store CPU-ms per
request; it does not depend on the generator's speed). Prints names and
numbers only."""

import http.client
import json
import os
import sys
import threading
import time


class Store:
    def __init__(self, host, port, root, pids, n, threads=4):
        self.host, self.port, self.root, self.pids = host, port, root, pids
        self.n, self.threads = n, threads
        self.conn = http.client.HTTPConnection(host, port)

    @classmethod
    def from_argv(cls):
        """The pinned store as store_cost_load names it: host, port, root
        token and pids in argv, the requests per kind in $N."""
        host, port, root, pids = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        return cls(host, port, root, pids, int(os.environ["N"]))

    def cpu(self):
        """User + system CPU seconds of the store's processes."""
        t = 0
        for p in self.pids.split():
            s = open(f"/proc/{p}/stat").read()
            f = s[s.rfind(")") + 2:].split()
            t += int(f[11]) + int(f[12])
        return t / 100.0

    @staticmethod
    def call(c, m, path, tok=None, body=None):
        """One request on connection `c`: (status, JSON body or None)."""
        h = {"X-Vault-Request": "true"}
        if tok:
            h["X-Vault-Token"] = tok
        c.request(m, "/v1/" + path, body=json.dumps(body) if body is not None else None, headers=h)
        r = c.getresponse()
        d = r.read()
        return r.status, (json.loads(d) if d else None)

    def ok(self, m, p, b=None, tok=""):
        """A setup call with the root token (or `tok`, None: none) that must succeed."""
        s, d = self.call(self.conn, m, p, self.root if tok == "" else tok, b)
        assert s < 300, (p, s, d)
        return d

    def run(self, name, fn, n=None, fresh=False, width=58):
        """`fn(conn, i)` -> status, n times over the connections; prints the rate and CPU."""
        n = n or self.n
        errs = [0]

        def worker(k):
            cc = http.client.HTTPConnection(self.host, self.port)
            for i in range(k):
                if fresh:
                    cc = http.client.HTTPConnection(self.host, self.port)
                if fn(cc, i) >= 300:
                    errs[0] += 1
                if fresh:
                    cc.close()

        c0, t0 = self.cpu(), time.time()
        ts = [threading.Thread(target=worker, args=(n // self.threads,)) for _ in range(self.threads)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        dt, dc, n2 = time.time() - t0, self.cpu() - c0, (n // self.threads) * self.threads
        print(f"{name:{width}s} {n2} req, {n2 / dt:6.0f}/s, store {1000 * dc / n2:5.2f} CPU-ms/req, {errs[0]} non-2xx", flush=True)
