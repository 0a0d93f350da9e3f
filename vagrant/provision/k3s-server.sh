#!/usr/bin/env bash
# The lab's k3s server (control plane, also a node that runs pods), installed with the
# upstream installer from get.k3s.io, and waited for until its node is Ready. Idempotent: an
# installed k3s is kept; a changed config restarts it.
#
# Usage: k3s-server.sh --node-ip ADDR [--channel CHANNEL] [--cluster-cidr CIDR]
#                      [--service-cidr CIDR]
# Environment:
#   K3S_TOKEN             the secret the other nodes join with (required)
#   EGRET_AGENT_TOKEN     a bearer token for the nodes' egret-agent (user egret-agent, group
#   EGRET_GATEWAY_TOKEN   egret:agents) and one for the gateways (user egret-gateway, group
#                         egret:gateways), in the API server's static token file: the lab
#                         hands them out without copying files between machines.
set -euo pipefail

log() { printf 'k3s-server.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

node_ip="" channel="stable" cluster_cidr="10.42.0.0/16" service_cidr="10.43.0.0/16"
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value"
    case "$1" in
    --node-ip) node_ip="$2" ;;
    --channel) channel="$2" ;;
    --cluster-cidr) cluster_cidr="$2" ;;
    --service-cidr) service_cidr="$2" ;;
    *) die "unknown option $1" ;;
    esac
    shift 2
done
[ "$(id -u)" -eq 0 ] || die "run as root"
[ -n "$node_ip" ] || die "--node-ip is required"
[ -n "${K3S_TOKEN:-}" ] || die "K3S_TOKEN is required"
[ -n "${EGRET_AGENT_TOKEN:-}" ] || die "EGRET_AGENT_TOKEN is required"
[ -n "${EGRET_GATEWAY_TOKEN:-}" ] || die "EGRET_GATEWAY_TOKEN is required"

interface="$(ip -o -4 addr show | awk -v a="$node_ip" '{ split($4, p, "/") } p[1] == a { print $2; exit }')"
[ -n "$interface" ] || die "no interface holds $node_ip"

changed=""
# write FILE: stdin into FILE (mode 0600) unless it holds that already.
write() {
    local new
    new="$(mktemp)"
    cat >"$new"
    if [ -f "$1" ] && cmp -s "$new" "$1"; then
        rm -f "$new"
    else
        install -D -m 0600 "$new" "$1"
        rm -f "$new"
        changed=1
    fi
}

write /etc/rancher/k3s/egret-tokens.csv <<EOF
$EGRET_AGENT_TOKEN,egret-agent,egret-agent,"egret:agents"
$EGRET_GATEWAY_TOKEN,egret-gateway,egret-gateway,"egret:gateways"
EOF

# The LAN, not Vagrant's management interface (the same address on every VirtualBox VM),
# carries the cluster. Traefik, ServiceLB and metrics-server are not needed here.
write /etc/rancher/k3s/config.yaml <<EOF
# Written by egret vagrant/provision/k3s-server.sh.
token: "$K3S_TOKEN"
node-ip: "$node_ip"
advertise-address: "$node_ip"
tls-san: ["$node_ip"]
flannel-iface: "$interface"
cluster-cidr: "$cluster_cidr"
service-cidr: "$service_cidr"
write-kubeconfig-mode: "0644"
disable: [traefik, servicelb, metrics-server]
kube-apiserver-arg:
  - "token-auth-file=/etc/rancher/k3s/egret-tokens.csv"
EOF

if [ ! -x /usr/local/bin/k3s ] || [ ! -f /etc/systemd/system/k3s.service ]; then
    log "installing k3s ($channel) with the installer from get.k3s.io"
    curl -sfL https://get.k3s.io | INSTALL_K3S_CHANNEL="$channel" sh -s - server
elif [ -n "$changed" ] || ! systemctl is-active --quiet k3s; then
    log "restarting k3s"
    systemctl restart k3s
fi

export KUBECONFIG=/etc/rancher/k3s/k3s.yaml
deadline=$((SECONDS + 600))
until kubectl get --raw=/readyz >/dev/null 2>&1 && kubectl get node "$(hostname)" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "the k3s API server is not ready after 10 minutes"
    sleep 3
done
kubectl wait --for=condition=Ready "node/$(hostname)" --timeout=600s
log "k3s server ready on $node_ip ($interface): $(k3s --version | head -n 1)"
