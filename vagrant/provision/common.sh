#!/usr/bin/env bash
# What every machine of the Vagrant lab gets first: the lab's names in /etc/hosts, a few
# packages, and on request a Linux 6.6 or later from the release's backports (egret-agent
# needs tcx links; egret-gateway's kernel fast path too) and the lab's router as the default
# route. Idempotent.
#
# Usage: common.sh --lan-address ADDR [--host NAME=ADDR]... [--package NAME]...
#                  [--backports-kernel] [--default-route ROUTER]
#
#   --lan-address ADDR     this machine's address on the lab's LAN (finds the interface)
#   --host NAME=ADDR       an /etc/hosts entry for another machine of the lab (repeatable)
#   --package NAME         a Debian package to install (repeatable)
#   --backports-kernel     install linux-image-amd64 from <codename>-backports when the running
#                          kernel is older than 6.6; Vagrant reboots the machine afterwards
#   --default-route ADDR   make ADDR, on the LAN, the default route, also after a reboot or
#                          when Vagrant reconfigures the interface; DHCP on the other
#                          (management) interfaces no longer installs one. The management
#                          interface keeps its own subnet, so `vagrant ssh` still works.
set -euo pipefail

log() { printf 'common.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

lan_address="" default_route="" backports_kernel=""
hosts=() packages=(ca-certificates curl iproute2 iputils-ping nftables)
while [ $# -gt 0 ]; do
    case "$1" in
    --backports-kernel)
        backports_kernel=1
        shift
        continue
        ;;
    esac
    [ $# -ge 2 ] || die "$1 needs a value"
    case "$1" in
    --lan-address) lan_address="$2" ;;
    --host) hosts+=("$2") ;;
    --package) packages+=("$2") ;;
    --default-route) default_route="$2" ;;
    *) die "unknown option $1" ;;
    esac
    shift 2
done
[ "$(id -u)" -eq 0 ] || die "run as root"
[ -n "$lan_address" ] || die "--lan-address is required"
export DEBIAN_FRONTEND=noninteractive

# ensure_packages PACKAGE...: installs what is missing, updating the lists first.
updated=""
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed \
            || missing+=("$pkg")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    if [ -z "$updated" ]; then
        apt-get update -q
        updated=1
    fi
    log "installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

ensure_packages "${packages[@]}"

lan_interface="$(ip -o -4 addr show | awk -v a="$lan_address" '{ split($4, p, "/") } p[1] == a { print $2; exit }')"
[ -n "$lan_interface" ] || die "no interface holds $lan_address"

# /etc/hosts: the lab's machines, in a block of our own.
if [ "${#hosts[@]}" -gt 0 ]; then
    block="$(mktemp)"
    touch /etc/hosts
    sed '/^# egret lab: begin/,/^# egret lab: end/d' /etc/hosts >"$block"
    {
        echo "# egret lab: begin"
        for entry in "${hosts[@]}"; do
            [[ "$entry" =~ ^[a-z0-9-]+=[0-9.]+$ ]] || die "--host $entry: expected NAME=ADDR"
            printf '%s\t%s\n' "${entry#*=}" "${entry%%=*}"
        done
        echo "# egret lab: end"
    } >>"$block"
    cmp -s "$block" /etc/hosts || cat "$block" >/etc/hosts
    rm -f "$block"
fi

if [ -n "$backports_kernel" ]; then
    read -r major minor _ <<<"$(uname -r | tr '.-' '  ')"
    if [ "$major" -gt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -ge 6 ]; }; then
        log "running Linux $(uname -r): new enough"
    else
        # shellcheck source=/dev/null
        codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
        list=/etc/apt/sources.list.d/egret-lab-backports.list
        line="deb http://deb.debian.org/debian $codename-backports main"
        [ "$(cat "$list" 2>/dev/null)" = "$line" ] || echo "$line" >"$list"
        # The kernel metapackage is installed already, from the release: upgrade it.
        if ! dpkg-query -W -f='${Version}' linux-image-amd64 2>/dev/null | grep -q bpo; then
            apt-get update -q
            updated=1
            apt-get install -y -q -t "$codename-backports" linux-image-amd64
        fi
        log "Linux from $codename-backports installed; it runs after the reboot"
    fi
fi

if [ -n "$default_route" ]; then
    # After a reboot, and whenever ifupdown (or Vagrant) brings the LAN interface up again.
    hook=/etc/network/if-up.d/egret-lab-default-route
    mkdir -p "${hook%/*}"
    cat >"$hook.new" <<EOF
#!/bin/sh
# Written by egret vagrant/provision/common.sh: the lab's router is the default route.
[ "\$IFACE" = "$lan_interface" ] || exit 0
ip route replace default via $default_route dev $lan_interface
EOF
    chmod 0755 "$hook.new"
    mv -f "$hook.new" "$hook"
    # dhclient (the management interface's DHCP) sources these; it keeps the address, drops
    # the router.
    if [ -d /etc/dhcp ]; then
        mkdir -p /etc/dhcp/dhclient-enter-hooks.d
        cat >/etc/dhcp/dhclient-enter-hooks.d/egret-lab-no-default-route <<EOF
# Written by egret vagrant/provision/common.sh: DHCP installs no default route (but on $lan_interface).
[ "\$interface" = "$lan_interface" ] || unset new_routers
EOF
    fi
    ip route replace default via "$default_route" dev "$lan_interface"
    deadline=$((SECONDS + 120))
    until ping -c 1 -W 2 "$default_route" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] \
            || die "the router $default_route does not answer: bring it up first (vagrant up outside)"
        sleep 2
    done
    log "default route via $default_route on $lan_interface"
fi
