#!/usr/bin/env bash
# The lab's outside host. It is two things at once:
#
# - the LAN's router: the nodes' default route and the gateways' next hop. It forwards the
#   LAN to the internet through its management interface (masquerading), so the nodes can
#   still download k3s and images once their default route points here;
# - the outside server, at an address of its own (--outside-address, on lo) that only this
#   router reaches: an HTTP answer with the source address it sees (port --http-port) and a
#   line echo that prefixes each line with it (port --echo-port). Traffic of a pod selected by a
#   policy arrives from the egress (floating) IP, any other pod's from its node's address.
#
# Idempotent. Usage:
#   outside.sh --lan-address ADDR --lan-cidr CIDR --outside-address ADDR --helpers DIR
#              [--http-port N] [--echo-port N]
# DIR holds the two servers, whoami and echo-peer (vagrant/provision/outside).
set -euo pipefail

log() { printf 'outside.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

lan_address="" lan_cidr="" outside_address="" helpers="" http_port=80 echo_port=9000
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value"
    case "$1" in
    --lan-address) lan_address="$2" ;;
    --lan-cidr) lan_cidr="$2" ;;
    --outside-address) outside_address="$2" ;;
    --helpers) helpers="$2" ;;
    --http-port) http_port="$2" ;;
    --echo-port) echo_port="$2" ;;
    *) die "unknown option $1" ;;
    esac
    shift 2
done
[ "$(id -u)" -eq 0 ] || die "run as root"
for required in lan_address lan_cidr outside_address helpers; do
    [ -n "${!required}" ] || die "--${required//_/-} is required"
done
for helper in whoami echo-peer; do
    [ -x "$helpers/$helper" ] || die "no $helper in $helpers"
done

if ! command -v socat >/dev/null || ! command -v nft >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends socat nftables
fi

lan_interface="$(ip -o -4 addr show | awk -v a="$lan_address" '{ split($4, p, "/") } p[1] == a { print $2; exit }')"
[ -n "$lan_interface" ] || die "no interface holds $lan_address"

changed=()
# write FILE MODE: stdin into FILE unless it holds that already.
write() {
    local file="$1" mode="$2" new
    new="$(mktemp)"
    cat >"$new"
    if [ -f "$file" ] && cmp -s "$new" "$file"; then
        rm -f "$new"
    else
        install -D -m "$mode" "$new" "$file"
        rm -f "$new"
        changed+=("$file")
    fi
}

write /etc/sysctl.d/60-egret-lab-router.conf 0644 <<EOF
# egret lab: this host routes the lab's LAN.
net.ipv4.ip_forward = 1
EOF
[ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || echo 1 >/proc/sys/net/ipv4/ip_forward

write /usr/local/lib/egret-lab/whoami 0755 <"$helpers/whoami"
write /usr/local/lib/egret-lab/echo-peer 0755 <"$helpers/echo-peer"

# The router: the outside address, and the LAN masqueraded toward the internet. Its own
# table, replaced whole on each start.
write /etc/egret-lab/router.nft 0644 <<EOF
table ip egret_lab_router
delete table ip egret_lab_router
table ip egret_lab_router {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        # The LAN's way to the internet: out of the management interface, as this host.
        ip saddr $lan_cidr oifname != "$lan_interface" masquerade
    }
}
EOF
write /etc/systemd/system/egret-lab-router.service 0644 <<EOF
[Unit]
Description=egret lab: the LAN's router and the outside address $outside_address
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=ip address replace $outside_address/32 dev lo
ExecStart=nft -f /etc/egret-lab/router.nft
ExecStop=-nft delete table ip egret_lab_router
ExecStop=-ip address del $outside_address/32 dev lo

[Install]
WantedBy=multi-user.target
EOF

# server NAME PORT PROGRAM DESCRIPTION: a socat service on the outside address.
server() {
    write "/etc/systemd/system/egret-lab-$1.service" 0644 <<EOF
[Unit]
Description=egret lab: $4
After=egret-lab-router.service
Requires=egret-lab-router.service

[Service]
ExecStart=socat TCP4-LISTEN:$2,bind=$outside_address,reuseaddr,fork EXEC:$3
DynamicUser=yes
AmbientCapabilities=CAP_NET_BIND_SERVICE
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
}
server whoami "$http_port" /usr/local/lib/egret-lab/whoami \
    "HTTP on $outside_address:$http_port answering the source address it sees"
server echo "$echo_port" /usr/local/lib/egret-lab/echo-peer \
    "line echo on $outside_address:$echo_port, each line prefixed with the source address"

units=(egret-lab-router egret-lab-whoami egret-lab-echo)
systemctl daemon-reload
systemctl enable --quiet "${units[@]}"
if [ "${#changed[@]}" -gt 0 ]; then
    log "changed: ${changed[*]}"
    systemctl restart "${units[@]}"
else
    systemctl start "${units[@]}"
fi
systemctl is-active --quiet "${units[@]}" || die "$(systemctl --no-pager status "${units[@]}")"

answer="$(curl -sS --max-time 5 "http://$outside_address:$http_port/")"
log "router on $lan_interface ($lan_address), outside server at $outside_address: it sees this host as $answer"
