# shellcheck shell=bash disable=SC2034  # sourced: the names are used by its callers
# Sourced by the e2e scripts (not executable): names shared by the image build,
# the cluster and the suite. Defaults are derived from the checkout path so
# that two checkouts on one machine never share containers, images, networks
# or subnets. Override with RH_E2E_PROJECT / RH_E2E_SUBNET (first 3 octets);
# RH_E2E_SUFFIX tells apart two clusters of one checkout (the benchmark).
RH_E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_rh_e2e_hash=$(( $(printf '%s' "$RH_E2E_ROOT" | cksum | cut -d' ' -f1) % 10000 ))
RH_E2E_PROJECT=${RH_E2E_PROJECT:-rh-e2e-$_rh_e2e_hash${RH_E2E_SUFFIX:-}}
# A /24 in 172.30.100-199 picked from the project name.
_rh_e2e_pick=$(( $(printf '%s' "$RH_E2E_PROJECT" | cksum | cut -d' ' -f1) % 100 + 100 ))
RH_E2E_SUBNET=${RH_E2E_SUBNET:-172.30.$_rh_e2e_pick}
RH_E2E_STATE=$RH_E2E_ROOT/e2e/.build/$RH_E2E_PROJECT
RH_E2E_BASE_IMAGE=rh-e2e-base:bookworm
RH_E2E_SYSTEMD_BASE_IMAGE=rh-e2e-base-systemd:bookworm
# Images are per checkout (the suite and the benchmark share them).
RH_E2E_NODE_IMAGE=rh-e2e-node:ck$_rh_e2e_hash
RH_E2E_AGENT_IMAGE=rh-e2e-agent:ck$_rh_e2e_hash
RH_E2E_SYSTEMD_IMAGE=rh-e2e-systemd:ck$_rh_e2e_hash
export RH_E2E_PROJECT RH_E2E_SUBNET
unset _rh_e2e_hash _rh_e2e_pick
