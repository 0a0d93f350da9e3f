#!/usr/bin/env bash
# Installs egret-gateway from its .deb, writes /etc/egret/gateway.toml for one gateway of a
# group, checks it with `egret-gateway check`, (re)starts the service and waits until
# `egret-gateway status` answers.
#
# It needs a booted Debian 12 or later with systemd as PID 1 and root, nothing else: a Vagrant
# VM, or a container (`systemd-nspawn -b`) with no network to the internet. Nothing is
# downloaded when the package's dependencies (nftables) are installed already; `apt-get -f
# install` runs only when `dpkg -i` reports missing ones. `ip` (iproute2) is only needed to
# find the interface from --address, or the address from --interface when --peer is given.
# Idempotent: run again with the same arguments, it changes nothing and restarts nothing.
#
# Usage: gateway.sh --deb FILE (--interface NAME | --address ADDR) --allowed-sources CIDR[,CIDR]
#                   --floating-ip ADDR:VRID[:PRIORITY] [--floating-ip ...] [options]
#
#   --deb FILE               the egret-gateway .deb to install (a path on this machine)
#   --interface NAME         [gateway].interface: the LAN with the nodes and the floating IPs
#   --address ADDR           this gateway's IPv4 address on that interface: finds the interface
#                            when --interface is not given; [sync].listen (default: the
#                            interface's first IPv4 address)
#   --allowed-sources CIDRS  [tunnel].allowed_sources, comma-separated: the nodes' addresses
#   --floating-ip A:V[:P]    a [[floating_ip]]: address A, VRID V, optional priority P for it
#   --name NAME              [gateway].name (default: the host name)
#   --priority N             [election].priority (default 100)
#   --peer ADDR              another gateway of the group (repeatable): unicast adverts to it
#                            ([election].peers) and flow sync with it ([sync], port
#                            --sync-port, key /etc/egret/sync.key). Without any, adverts are
#                            multicast and there is no [sync] table.
#   --next-hop ADDR          [gateway].next_hop (default: the default route via the interface)
#   --advert-interval D      [election].advert_interval (default "1s")
#   --port N --vni N         [tunnel].port (default 4800) and [tunnel].vni (default 1)
#   --sync-port N            UDP port of the flow sync (default 4801)
#   --api ADDR:PORT          [api].listen (default 127.0.0.1:9477)
#   --kubeconfig FILE        add [kubernetes] with this kubeconfig (an existing file; made
#                            readable by the service's user alone), reporting into the
#                            EgressGateway --egress-gateway NAME (default "default")
#   --timeout SECONDS        how long to wait for `egret-gateway status` (default 60)
#
# Environment: EGRET_SYNC_KEY, the group's sync key as base64 (at least 32 bytes; the same on
# every gateway of the group). Unset: an existing /etc/egret/sync.key is kept, else a new
# random one is made (fine for a single gateway, not for a group).
#
# vagrant/Vagrantfile runs it on gw1 as (EGRET_SYNC_KEY in the environment):
#   gateway.sh --deb /egret-packages/egret-gateway_0.1.0-1_amd64.deb --name gw1 \
#     --address 192.168.50.11 --allowed-sources 192.168.50.0/24 --next-hop 192.168.50.254 \
#     --priority 100 --advert-interval 200ms --port 4800 --vni 1 --sync-port 4801 \
#     --kubeconfig /etc/egret/kubeconfig \
#     --floating-ip 192.168.50.100:10:200 --floating-ip 192.168.50.101:11 --peer 192.168.50.12
# and a container test, with the interface and subnet it gave the container, as:
#   gateway.sh --deb /root/egret-gateway_0.1.0-1_amd64.deb --interface host0 \
#     --allowed-sources 10.99.0.0/24 --floating-ip 10.99.0.100:10
# (add --peer ADDR for [sync], with EGRET_SYNC_KEY or without). It prints the status and
# exits 0 once the gateway answers; non-zero with the journal's last lines otherwise.
set -euo pipefail

CONFIG=/etc/egret/gateway.toml
KEY_FILE=/etc/egret/sync.key
UNIT=egret-gateway.service

log() { printf 'gateway.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '/^# Usage:/,/^# Environment:/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

deb="" interface="" address="" allowed_sources="" name="" priority=100 next_hop=""
advert_interval="1s" port=4800 vni=1 sync_port=4801 api="127.0.0.1:9477" kubeconfig=""
egress_gateway="default" timeout=60
floating_ips=() peers=()

while [ $# -gt 0 ]; do
    case "$1" in --help | -h) usage ;; esac
    [ $# -ge 2 ] || die "$1 needs a value (--help)"
    case "$1" in
    --deb) deb="$2" ;;
    --interface) interface="$2" ;;
    --address) address="$2" ;;
    --allowed-sources) allowed_sources="$2" ;;
    --floating-ip) floating_ips+=("$2") ;;
    --name) name="$2" ;;
    --priority) priority="$2" ;;
    --peer) peers+=("$2") ;;
    --next-hop) next_hop="$2" ;;
    --advert-interval) advert_interval="$2" ;;
    --port) port="$2" ;;
    --vni) vni="$2" ;;
    --sync-port) sync_port="$2" ;;
    --api) api="$2" ;;
    --kubeconfig) kubeconfig="$2" ;;
    --egress-gateway) egress_gateway="$2" ;;
    --timeout) timeout="$2" ;;
    *) die "unknown option $1 (--help)" ;;
    esac
    shift 2
done

[ "$(id -u)" -eq 0 ] || die "run as root"
[ -n "$deb" ] || die "--deb is required"
[ -f "$deb" ] || die "no package at $deb (build it with scripts/package)"
[ -n "$interface" ] || [ -n "$address" ] || die "--interface or --address is required"
[ -n "$allowed_sources" ] || die "--allowed-sources is required"
[ "${#floating_ips[@]}" -gt 0 ] || die "at least one --floating-ip is required"
[ -z "$kubeconfig" ] || [ -f "$kubeconfig" ] || die "no kubeconfig at $kubeconfig"

# Values go into TOML strings: refuse anything that could break out of one. egret-gateway
# check judges what they mean.
plain() {
    local what="$1" value="$2" pattern="$3"
    [[ "$value" =~ $pattern ]] || die "$what: unexpected value '$value'"
}
ADDR='^[0-9]+(\.[0-9]+){3}$'
NUMBER='^[0-9]+$'
[ -z "$interface" ] || plain --interface "$interface" '^[A-Za-z0-9_.@-]+$'
[ -z "$address" ] || plain --address "$address" "$ADDR"
[ -z "$name" ] || plain --name "$name" '^[A-Za-z0-9_.-]+$'
[ -z "$next_hop" ] || plain --next-hop "$next_hop" "$ADDR"
[ "$priority" = auto ] || plain --priority "$priority" "$NUMBER"
plain --advert-interval "$advert_interval" '^[0-9.a-z]+$'
plain --port "$port" "$NUMBER"
plain --vni "$vni" "$NUMBER"
plain --sync-port "$sync_port" "$NUMBER"
plain --api "$api" '^[0-9.]+:[0-9]+$'
plain --egress-gateway "$egress_gateway" '^[a-z0-9.-]+$'
plain --timeout "$timeout" "$NUMBER"
plain --allowed-sources "$allowed_sources" '^[0-9./]+(,[0-9./]+)*$'
for peer in "${peers[@]}"; do plain --peer "$peer" "$ADDR"; done
for spec in "${floating_ips[@]}"; do
    plain --floating-ip "$spec" '^[0-9]+(\.[0-9]+){3}:[0-9]+(:[0-9]+)?$'
done

# The interface and this gateway's address, one found from the other.
if [ -z "$interface" ]; then
    command -v ip >/dev/null || die "finding the interface of --address needs ip (iproute2); give --interface"
    interface="$(ip -o -4 addr show | awk -v a="$address" '{ split($4, p, "/") } p[1] == a { print $2; exit }')"
    [ -n "$interface" ] || die "no interface holds $address"
fi
if [ -z "$address" ] && [ "${#peers[@]}" -gt 0 ]; then
    command -v ip >/dev/null || die "finding the address of $interface needs ip (iproute2); give --address"
    address="$(ip -o -4 addr show dev "$interface" scope global | awk '{ split($4, p, "/"); print p[1]; exit }')"
    [ -n "$address" ] || die "$interface has no IPv4 address"
fi

changed=""

# 1. The package. dpkg -i alone when its dependencies are installed; apt-get fetches them
# otherwise. --force-confold keeps a gateway.toml this script wrote on a reinstall.
package="$(dpkg-deb -f "$deb" Package)"
version="$(dpkg-deb -f "$deb" Version)"
installed="$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$package" 2>/dev/null || true)"
if [ "$installed" != "installed $version" ]; then
    log "installing $package $version from $deb"
    export DEBIAN_FRONTEND=noninteractive
    if ! dpkg -i --force-confold "$deb"; then
        log "dpkg could not configure $package: fetching its dependencies with apt-get"
        apt-get -o Dpkg::Options::=--force-confold -f install -y
    fi
    changed="package"
fi
command -v egret-gateway >/dev/null || die "$package installed no egret-gateway command"

# Files the service reads must belong to its user (the unit's User=, root when unset).
service_user="$(systemctl show -p User --value "$UNIT")"
service_user="${service_user:-root}"
install -d -m 0755 /etc/egret

# install_file NEW TARGET MODE: puts NEW in place of TARGET unless they are the same, owned by
# the service's user; records the change.
install_file() {
    local new="$1" target="$2" mode="$3"
    if [ -f "$target" ] && cmp -s "$new" "$target"; then
        rm -f "$new"
    else
        chown "$service_user:" "$new"
        chmod "$mode" "$new"
        mv -f "$new" "$target"
        changed="${changed:+$changed, }$target"
    fi
    chown "$service_user:" "$target"
    chmod "$mode" "$target"
}

# 2. The sync key, shared by the group (only with peers: without them there is no [sync]).
if [ "${#peers[@]}" -gt 0 ]; then
    key_new="$(mktemp /etc/egret/.sync.key.XXXXXX)"
    if [ -n "${EGRET_SYNC_KEY:-}" ]; then
        printf '%s' "$EGRET_SYNC_KEY" | base64 -d >"$key_new" 2>/dev/null \
            || die "EGRET_SYNC_KEY is not base64"
        [ "$(stat -c %s "$key_new")" -ge 32 ] || die "EGRET_SYNC_KEY holds fewer than 32 bytes"
    elif [ -f "$KEY_FILE" ]; then
        cat "$KEY_FILE" >"$key_new"
    else
        log "no EGRET_SYNC_KEY: making a new random $KEY_FILE (every gateway of a group needs the same)"
        head -c 32 /dev/urandom >"$key_new"
    fi
    install_file "$key_new" "$KEY_FILE" 0600
fi

if [ -n "$kubeconfig" ]; then
    chown "$service_user:" "$kubeconfig"
    chmod 0600 "$kubeconfig"
fi

# 3. The config, checked before it replaces the installed one.
toml_list() {
    local suffix="$1" item out=""
    shift
    for item in "$@"; do out="${out:+$out, }\"$item$suffix\""; done
    printf '[%s]' "$out"
}
IFS=, read -r -a sources <<<"$allowed_sources"
config_new="$(mktemp /etc/egret/.gateway.toml.XXXXXX)"
{
    printf '# Written by vagrant/provision/gateway.sh of egret; every key is described in the\n'
    printf '# commented example, packaging/gateway.toml, and in the README.\n\n'
    printf '[gateway]\n'
    [ -z "$name" ] || printf 'name = "%s"\n' "$name"
    printf 'interface = "%s"\n' "$interface"
    [ -z "$next_hop" ] || printf 'next_hop = "%s"\n' "$next_hop"
    printf '\n[tunnel]\nport = %s\nvni = %s\nallowed_sources = %s\n' \
        "$port" "$vni" "$(toml_list "" "${sources[@]}")"
    printf '\n[election]\n'
    if [ "$priority" = auto ]; then printf 'priority = "auto"\n'; else printf 'priority = %s\n' "$priority"; fi
    printf 'advert_interval = "%s"\npreempt = true\npeers = %s\n' \
        "$advert_interval" "$(toml_list "" "${peers[@]}")"
    for spec in "${floating_ips[@]}"; do
        IFS=: read -r fip vrid fip_priority <<<"$spec"
        printf '\n[[floating_ip]]\naddress = "%s"\nvrid = %s\n' "$fip" "$vrid"
        [ -z "$fip_priority" ] || printf 'priority = %s\n' "$fip_priority"
    done
    if [ "${#peers[@]}" -gt 0 ]; then
        printf '\n[sync]\nlisten = "%s:%s"\npeers = %s\nkey_file = "%s"\n' \
            "$address" "$sync_port" "$(toml_list ":$sync_port" "${peers[@]}")" "$KEY_FILE"
    fi
    printf '\n[api]\nlisten = "%s"\n' "$api"
    if [ -n "$kubeconfig" ]; then
        printf '\n[kubernetes]\nkubeconfig = "%s"\ngateway = "%s"\n' "$kubeconfig" "$egress_gateway"
    fi
} >"$config_new"
if ! egret-gateway check --config "$config_new" >/dev/null; then
    log "the config it refused, $config_new:"
    nl -ba "$config_new" >&2
    rm -f "$config_new"
    die "egret-gateway check refused the config; $CONFIG is unchanged"
fi
# The packaged file's owner and mode (the service's user must read it), root-only otherwise.
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

# 4. The service: restarted when anything changed or it is not running.
systemctl enable --quiet "$UNIT"
if [ -n "$changed" ] || ! systemctl is-active --quiet "$UNIT"; then
    log "restarting $UNIT (changed: ${changed:-nothing; it was not running})"
    if ! systemctl restart "$UNIT"; then
        systemctl status --no-pager "$UNIT" >&2 || true
        journalctl -u "$UNIT" -n 50 --no-pager >&2 || true
        die "$UNIT did not start"
    fi
fi

# 5. Running means answering on [api].listen.
deadline=$((SECONDS + timeout))
until status="$(egret-gateway status --config "$CONFIG" 2>&1)"; do
    if [ "$SECONDS" -ge "$deadline" ] || systemctl is-failed --quiet "$UNIT"; then
        printf '%s\n' "$status" >&2
        journalctl -u "$UNIT" -n 50 --no-pager >&2 || true
        die "egret-gateway status did not answer within ${timeout}s"
    fi
    sleep 1
done
printf '%s\n' "$status"
log "egret-gateway is running on $interface"
