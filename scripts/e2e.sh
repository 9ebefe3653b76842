#!/usr/bin/env bash
# The docker-compose end-to-end suite: builds the release controller, the
# static node agents (scripts/build-agents.sh: the x86_64 one is the agent
# every node runs, as users' nodes do), the node images (no registry:
# debootstrap bases, reused when present), starts a cluster of containers
# (3 agent nodes started by the boot script, 3 bare nodes for `cluster
# bootstrap`, 1 node with systemd as PID 1), runs the e2e tests against it with the real
# controller over real SSH, then the pull-mode tests (e2e/tests/fleet/: a three-node
# OpenBao HA cluster on the node network, the bare nodes bootstrapped as a pull
# cluster and pull nodes started by docker-compose from enrolled bundles, the
# store leader killed mid-convergence; a spent bundle refused; the systemd node
# pulling at boot and after a restart), then the OpenBao HA test
# (e2e/vault-ha/run.sh), saves every container's logs to e2e/.build/logs/,
# and tears the cluster down whatever happens.
# Usage: scripts/e2e.sh [TEST_FILTER]
# Env:   RH_E2E_NODES=3 (nodes per set), RH_E2E_KEEP=1 (leave the cluster up),
#        RH_E2E_PROJECT / RH_E2E_SUBNET (see e2e/env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. e2e/env.sh
NODES=${RH_E2E_NODES:-3}
LOGS=$PWD/e2e/.build/logs
# The controller's temp HOME (fixtures): a short path, as the controller keeps
# ssh control sockets under it (Unix socket paths are limited to 108 bytes).
WORK=$(mktemp -d /tmp/rhe2e.XXXXXX)
BAO_PROJECT=${RH_E2E_PROJECT}-bao
start=$(date +%s)

# shellcheck disable=SC2317  # the EXIT trap
finish() {
  local rc=$?
  trap - EXIT INT TERM
  step "e2e: saving container logs to e2e/.build/logs"
  e2e/cluster.sh logs "$LOGS" || true
  # The store's nodes sit on the node network: they go first.
  e2e/vault-ha/cluster.sh down --project "$BAO_PROJECT" || true
  if [ "${RH_E2E_KEEP:-0}" = 1 ]; then
    step "e2e: cluster left up (RH_E2E_KEEP=1): e2e/cluster.sh down"
  else
    e2e/cluster.sh down || true
  fi
  close_ssh_masters "$WORK"
  rm -rf "$WORK"
  step "e2e: wall time $(( $(date +%s) - start )) s, exit $rc"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

rm -rf "$LOGS"
mkdir -p "$LOGS"

step "e2e: cargo build --release -p controller; static agents"
cargo build --release --quiet -p controller
scripts/build-agents.sh

step "e2e: node images"
e2e/build-images.sh

step "e2e: cluster up ($NODES agent nodes, $NODES bare nodes, 1 systemd node)"
e2e/cluster.sh up --agents "$NODES" --bare "$NODES" --systemd 1

step "e2e: tests"
export RH_E2E_CLUSTER_ENV=$RH_E2E_STATE/cluster.env RH_E2E_LOGS=$LOGS RH_E2E_WORK=$WORK
export RH_E2E_CONTROLLER=$PWD/target/release/controller
# Where bootstrap finds the static agents (also target/agents beside the controller).
export RH_AGENTS_DIR=$PWD/target/agents
set +e
cargo test --release -p e2e --test cluster -- --ignored --test-threads=1 --nocapture ${1:+"$1"} 2>&1 \
  | tee "$LOGS/tests.log"
rc=${PIPESTATUS[0]}
set -e
grep -E '^test result:' "$LOGS/tests.log" | tail -n1 >&2 || true

# (bao.env in the cluster's state dir: the test harness empties $WORK.)
# Pull mode: the HA store on the node network (addresses from cluster.env),
# the bare nodes bootstrapped as a pull cluster, compose pull nodes added by
# the test (e2e/cluster.sh pull), the leader killed mid-run.
step "e2e: pull mode (OpenBao HA on the node network, leader killed mid-convergence)"
# shellcheck source=/dev/null  # written by e2e/cluster.sh up
. "$RH_E2E_STATE/cluster.env"
set +e
e2e/vault-ha/cluster.sh up --project "$BAO_PROJECT" --env-file "$RH_E2E_STATE/bao.env" \
  --network "$RH_E2E_NETWORK" --ips "$RH_E2E_BAO_IPS" 2>&1 | tee "$LOGS/fleet-store.log"
store_rc=${PIPESTATUS[0]}
fleet_rc=$store_rc
if [ "$store_rc" -eq 0 ]; then
  RH_E2E_BAO_ENV=$RH_E2E_STATE/bao.env cargo test --release -p e2e --test fleet -- --ignored \
    --test-threads=1 --nocapture ${1:+"$1"} 2>&1 | tee "$LOGS/fleet-tests.log"
  fleet_rc=${PIPESTATUS[0]}
fi
e2e/vault-ha/cluster.sh down --project "$BAO_PROJECT"
set -e
[ "$rc" -ne 0 ] || rc=$fleet_rc

# The remote store's HA test: a three-node OpenBao Raft cluster, leader
# killed mid-run, push and pull still served through the URL list.
step "e2e: OpenBao HA (three-node Raft, leader killed mid-run)"
set +e
RH_CONTROLLER=$RH_E2E_CONTROLLER bash e2e/vault-ha/run.sh 2>&1 | tee "$LOGS/vault-ha.log"
ha_rc=${PIPESTATUS[0]}
set -e
[ "$rc" -ne 0 ] || rc=$ha_rc
exit "$rc"
