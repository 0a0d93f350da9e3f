#!/usr/bin/env bash
# egret's objects in the lab's cluster, applied with kubectl on the k3s server, as a cluster's
# user would: the CRDs, the agents' and the gateways' RBAC, the EgressGateway with the lab's
# floating IPs, the seed's EgressNATPolicy with the lab's addresses, and the demo pods.
# Idempotent (kubectl apply).
#
# Usage: egret-cluster.sh --repo DIR --floating-ip ADDR [--floating-ip ADDR]...
#                         --egress-ip ADDR --destination CIDR
#
#   --repo DIR          egret's repository (packaging/kubernetes and vagrant/manifests)
#   --floating-ip ADDR  the gateways' floating IPs: spec.floatingIPs of EgressGateway default
#   --egress-ip ADDR    the policy's egressSourceIP (one of the floating IPs)
#   --destination CIDR  the policy's destinationCIDRs (the outside host's network)
#
# packaging/kubernetes/agent.yaml is applied without its DaemonSet and ConfigMap: the lab runs
# egret-agent on the nodes' hosts from the .deb (vagrant/provision/egret-agent.sh), since no
# container image of it is published.
set -euo pipefail

log() { printf 'egret-cluster.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

repo="" egress_ip="" destination=""
floating_ips=()
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value"
    case "$1" in
    --repo) repo="$2" ;;
    --floating-ip) floating_ips+=("$2") ;;
    --egress-ip) egress_ip="$2" ;;
    --destination) destination="$2" ;;
    *) die "unknown option $1" ;;
    esac
    shift 2
done
[ -d "$repo/packaging/kubernetes" ] || die "--repo: no packaging/kubernetes in '$repo'"
[ "${#floating_ips[@]}" -gt 0 ] || die "at least one --floating-ip is required"
[ -n "$egress_ip" ] || die "--egress-ip is required"
[ -n "$destination" ] || die "--destination is required"
manifests="$repo/packaging/kubernetes"
export KUBECONFIG="${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}"

kubectl apply -f "$manifests/crds.yaml"
kubectl wait --for=condition=Established --timeout=120s \
    crd/egressgateways.egret.dev crd/egressnatpolicies.egret.dev

# Every document of agent.yaml but the DaemonSet and its ConfigMap.
awk '
    function flush() {
        if (doc != "" && doc !~ /\nkind: (DaemonSet|ConfigMap)\n/) printf "---%s\n", doc
        doc = ""
    }
    /^---$/ { flush(); next }
    { doc = doc "\n" $0 }
    END { flush() }
' "$manifests/agent.yaml" | kubectl apply -f -
kubectl apply -f "$manifests/gateway-rbac.yaml"
kubectl apply -f "$repo/vagrant/manifests/agent-hosts-rbac.yaml"

# examples/egressgateway.yaml with the lab's floating IPs.
{
    sed -n '/^spec:/q; p' "$manifests/examples/egressgateway.yaml"
    printf 'spec:\n  floatingIPs:\n'
    printf '    - %s\n' "${floating_ips[@]}"
} | kubectl apply -f -

# The seed's policy, examples/egressnatpolicy.yaml, with the lab's addresses for its
# destination (8.8.8.0/24 there) and its egress IP (192.168.1.100 there).
policy="$(sed -e "s#8\.8\.8\.0/24#$destination#" -e "s#192\.168\.1\.100#$egress_ip#" \
    "$manifests/examples/egressnatpolicy.yaml")"
if ! grep -q -- "- $destination\$" <<<"$policy" || ! grep -q "egressSourceIP: $egress_ip\$" <<<"$policy"; then
    die "examples/egressnatpolicy.yaml changed: cannot set its destination and egress IP"
fi
kubectl apply -f - <<<"$policy"

kubectl apply -f "$repo/vagrant/manifests/demo.yaml"
log "applied; the demo pods start once their nodes joined"
kubectl get egressgateways,egressnatpolicies
