#!/usr/bin/env bash
# Installs egret-agent from its .deb on a Kubernetes node and runs it on the host in Kubernetes
# mode (the DaemonSet's job, without a container image): it follows the cluster's
# EgressNATPolicy and EgressGateway objects with the kubeconfig given. Idempotent: nothing is
# restarted when nothing changed.
#
# Usage: egret-agent.sh --deb FILE --node-name NAME (--interface NAME | --address ADDR)
#                       --kubeconfig FILE [--port N] [--vni N] [--non-masquerade CIDR]...
#                       [--cni-masquerade-exemption]
#
#   --node-name NAME     the Node's name in the cluster ([agent].node_name)
#   --interface NAME     the node's uplink toward the gateways ([agent].interface), or the
#   --address ADDR       interface holding ADDR
#   --kubeconfig FILE    [kubernetes].kubeconfig (vagrant/provision/kubeconfig.sh writes it)
#   --port N --vni N     [tunnel]: the gateways' tunnel port (default 4800) and VNI (default 1)
#   --non-masquerade C   [masquerade].non_masquerade_cidrs (repeatable; default: the agent's)
#   --cni-masquerade-exemption
#                        let the tunnelled packets pass the CNI's own masquerade rules:
#                        flannel (k3s) masquerades every pod packet leaving for outside the
#                        cluster, also into the agent's tunnel device, where it must keep the
#                        pod's address. An iptables rule first in nat POSTROUTING accepts
#                        packets leaving by egret0 before flannel's chain sees them
#                        (installs iptables; k3s then uses the host's iptables too).
set -euo pipefail

CONFIG=/etc/egret/agent.toml
UNIT=egret-agent.service
TUNNEL_DEVICE=egret0

log() { printf 'egret-agent.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

deb="" node_name="" interface="" address="" kubeconfig="" port=4800 vni=1 exemption=""
non_masquerade=()
while [ $# -gt 0 ]; do
    case "$1" in
    --cni-masquerade-exemption)
        exemption=1
        shift
        continue
        ;;
    esac
    [ $# -ge 2 ] || die "$1 needs a value"
    case "$1" in
    --deb) deb="$2" ;;
    --node-name) node_name="$2" ;;
    --interface) interface="$2" ;;
    --address) address="$2" ;;
    --kubeconfig) kubeconfig="$2" ;;
    --port) port="$2" ;;
    --vni) vni="$2" ;;
    --non-masquerade) non_masquerade+=("$2") ;;
    *) die "unknown option $1" ;;
    esac
    shift 2
done
[ "$(id -u)" -eq 0 ] || die "run as root"
[ -f "$deb" ] || die "no package at '$deb' (build it with scripts/package)"
[[ "$node_name" =~ ^[a-z0-9.-]+$ ]] || die "--node-name: expected a Node name"
[ -f "$kubeconfig" ] || die "no kubeconfig at '$kubeconfig'"
[[ "$port" =~ ^[0-9]+$ ]] || die "--port: expected a number"
[[ "$vni" =~ ^[0-9]+$ ]] || die "--vni: expected a number"
for cidr in "${non_masquerade[@]}"; do
    [[ "$cidr" =~ ^[0-9./]+$ ]] || die "--non-masquerade $cidr: expected a CIDR"
done
if [ -z "$interface" ]; then
    [ -n "$address" ] || die "--interface or --address is required"
    interface="$(ip -o -4 addr show | awk -v a="$address" '{ split($4, p, "/") } p[1] == a { print $2; exit }')"
    [ -n "$interface" ] || die "no interface holds $address"
fi
[[ "$interface" =~ ^[A-Za-z0-9_.@-]+$ ]] || die "--interface: unexpected name"
export DEBIAN_FRONTEND=noninteractive

changed=""

# 1. The package (its dependencies from the network only when missing).
package="$(dpkg-deb -f "$deb" Package)"
version="$(dpkg-deb -f "$deb" Version)"
installed="$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$package" 2>/dev/null || true)"
if [ "$installed" != "installed $version" ]; then
    log "installing $package $version from $deb"
    if ! dpkg -i --force-confold "$deb"; then
        apt-get -o Dpkg::Options::=--force-confold -f install -y
    fi
    changed="package"
fi

# 2. The CNI's masquerade leaves the tunnel alone, now and after each boot (before k3s).
if [ -n "$exemption" ]; then
    command -v iptables >/dev/null || { apt-get update -q && apt-get install -y -q iptables; }
    match=(-o "$TUNNEL_DEVICE" -m comment --comment egret-tunnel-keeps-pod-source -j ACCEPT)
    unit_new="$(mktemp)"
    cat >"$unit_new" <<EOF
[Unit]
Description=egret lab: the CNI's masquerade leaves packets into $TUNNEL_DEVICE alone
Before=k3s.service k3s-agent.service egret-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c "iptables -t nat -C POSTROUTING ${match[*]} 2>/dev/null || iptables -t nat -I POSTROUTING 1 ${match[*]}"

[Install]
WantedBy=multi-user.target
EOF
    unit=/etc/systemd/system/egret-lab-cni-masquerade-exemption.service
    if ! cmp -s "$unit_new" "$unit"; then
        install -m 0644 "$unit_new" "$unit"
        systemctl daemon-reload
    fi
    rm -f "$unit_new"
    systemctl enable --quiet egret-lab-cni-masquerade-exemption.service
    iptables -t nat -C POSTROUTING "${match[@]}" 2>/dev/null \
        || iptables -t nat -I POSTROUTING 1 "${match[@]}"
fi

# 3. The config, checked before it replaces the installed one.
toml_list() {
    local item out=""
    for item in "$@"; do out="${out:+$out, }\"$item\""; done
    printf '[%s]' "$out"
}
install -d -m 0755 /etc/egret
config_new="$(mktemp /etc/egret/.agent.toml.XXXXXX)"
{
    printf '# Written by vagrant/provision/egret-agent.sh of egret; every key is described in the\n'
    printf '# commented example, packaging/agent.toml, and in the README.\n\n'
    printf '[agent]\nmode = "kubernetes"\nnode_name = "%s"\ninterface = "%s"\n' "$node_name" "$interface"
    printf '\n[tunnel]\nport = %s\nvni = %s\n' "$port" "$vni"
    printf '\n[masquerade]\n'
    if [ "${#non_masquerade[@]}" -gt 0 ]; then
        printf 'non_masquerade_cidrs = %s\n' "$(toml_list "${non_masquerade[@]}")"
    fi
    printf 'masquerade_link_local = false\n'
    printf '\n[kubernetes]\nkubeconfig = "%s"\n' "$kubeconfig"
} >"$config_new"
if ! egret-agent check --config "$config_new" >/dev/null; then
    log "the config it refused, $config_new:"
    nl -ba "$config_new" >&2
    rm -f "$config_new"
    die "egret-agent check refused the config; $CONFIG is unchanged"
fi
if [ -f "$CONFIG" ] && cmp -s "$config_new" "$CONFIG"; then
    rm -f "$config_new"
else
    if [ -f "$CONFIG" ]; then
        chown --reference="$CONFIG" "$config_new"
        chmod --reference="$CONFIG" "$config_new"
    else
        chmod 0644 "$config_new"
    fi
    mv -f "$config_new" "$CONFIG"
    changed="${changed:+$changed, }$CONFIG"
fi

# 4. The service.
systemctl enable --quiet "$UNIT"
if [ -n "$changed" ] || ! systemctl is-active --quiet "$UNIT"; then
    log "restarting $UNIT (changed: ${changed:-nothing; it was not running})"
    systemctl restart "$UNIT" || {
        journalctl -u "$UNIT" -n 50 --no-pager >&2 || true
        die "$UNIT did not start"
    }
fi
deadline=$((SECONDS + 120))
until status="$(egret-agent status --config "$CONFIG" 2>&1)" && grep -q 'agent running' <<<"$status"; do
    if [ "$SECONDS" -ge "$deadline" ] || systemctl is-failed --quiet "$UNIT"; then
        printf '%s\n' "$status" >&2
        journalctl -u "$UNIT" -n 50 --no-pager >&2 || true
        die "egret-agent is not running after 120s"
    fi
    sleep 2
done
printf '%s\n' "$status"
log "egret-agent runs on $node_name ($interface)"
