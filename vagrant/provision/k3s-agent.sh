#!/usr/bin/env bash
# A k3s worker node of the lab, joined to the server with the upstream installer from
# get.k3s.io, and waited for until its kubelet is healthy. Idempotent: an installed k3s agent
# is kept; a changed config restarts it.
#
# Usage: k3s-agent.sh --server URL --node-ip ADDR [--channel CHANNEL]
# Environment: K3S_TOKEN, the server's join secret (required).
set -euo pipefail

log() { printf 'k3s-agent.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

server="" node_ip="" channel="stable"
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value"
    case "$1" in
    --server) server="$2" ;;
    --node-ip) node_ip="$2" ;;
    --channel) channel="$2" ;;
    *) die "unknown option $1" ;;
    esac
    shift 2
done
[ "$(id -u)" -eq 0 ] || die "run as root"
[ -n "$server" ] || die "--server is required"
[ -n "$node_ip" ] || die "--node-ip is required"
[ -n "${K3S_TOKEN:-}" ] || die "K3S_TOKEN is required"

interface="$(ip -o -4 addr show | awk -v a="$node_ip" '{ split($4, p, "/") } p[1] == a { print $2; exit }')"
[ -n "$interface" ] || die "no interface holds $node_ip"

new="$(mktemp)"
cat >"$new" <<EOF
# Written by egret vagrant/provision/k3s-agent.sh.
server: "$server"
token: "$K3S_TOKEN"
node-ip: "$node_ip"
flannel-iface: "$interface"
EOF
changed=""
if ! cmp -s "$new" /etc/rancher/k3s/config.yaml; then
    install -D -m 0600 "$new" /etc/rancher/k3s/config.yaml
    changed=1
fi
rm -f "$new"

if [ ! -x /usr/local/bin/k3s ] || [ ! -f /etc/systemd/system/k3s-agent.service ]; then
    log "installing the k3s agent ($channel) with the installer from get.k3s.io"
    curl -sfL https://get.k3s.io | K3S_URL="$server" INSTALL_K3S_CHANNEL="$channel" sh -s - agent
elif [ -n "$changed" ] || ! systemctl is-active --quiet k3s-agent; then
    log "restarting k3s-agent"
    systemctl restart k3s-agent
fi

deadline=$((SECONDS + 600))
until [ "$(curl -s --max-time 2 http://127.0.0.1:10248/healthz 2>/dev/null)" = ok ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "the kubelet is not healthy after 10 minutes (journalctl -u k3s-agent)"
    sleep 3
done
log "k3s agent joined $server from $node_ip ($interface)"
