#!/usr/bin/env bash
# Writes a kubeconfig for an egret daemon outside the cluster's pods (egret-agent on a k3s
# node, egret-gateway on a gateway): the API server, its CA and a bearer token. Then checks
# that the token is accepted. Idempotent.
#
# Usage: kubeconfig.sh --server URL --user NAME --out FILE [--ca-file FILE]
# Environment: EGRET_TOKEN, the bearer token (required).
#
# The CA comes from --ca-file when it exists (a k3s node has it:
# /var/lib/rancher/k3s/agent/server-ca.crt); otherwise it is fetched from the k3s server's
# /cacerts, trusting the lab's private LAN on first use (a real deployment copies the CA from
# a trusted place instead).
set -euo pipefail

log() { printf 'kubeconfig.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

server="" user="" out="" ca_file=""
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value"
    case "$1" in
    --server) server="$2" ;;
    --user) user="$2" ;;
    --out) out="$2" ;;
    --ca-file) ca_file="$2" ;;
    *) die "unknown option $1" ;;
    esac
    shift 2
done
[ "$(id -u)" -eq 0 ] || die "run as root"
[ -n "$server" ] || die "--server is required"
[ -n "$user" ] || die "--user is required"
[ -n "$out" ] || die "--out is required"
[ -n "${EGRET_TOKEN:-}" ] || die "EGRET_TOKEN is required"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

deadline=$((SECONDS + 300))
if [ -n "$ca_file" ] && [ -s "$ca_file" ]; then
    cp "$ca_file" "$work/ca.crt"
else
    [ -z "$ca_file" ] || log "no CA at $ca_file: fetching it from $server/cacerts"
    until curl -fsS --insecure --max-time 5 "$server/cacerts" -o "$work/ca.crt" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "cannot fetch $server/cacerts"
        sleep 3
    done
fi
grep -q 'BEGIN CERTIFICATE' "$work/ca.crt" || die "the CA is not a PEM certificate"

# The token must be accepted (401 otherwise) by a server the CA vouches for.
until code="$(curl -sS --max-time 5 --cacert "$work/ca.crt" -o /dev/null -w '%{http_code}' \
    -H "Authorization: Bearer $EGRET_TOKEN" "$server/version")" && [ "$code" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "$server does not accept the token of $user (HTTP ${code:-none})"
    sleep 3
done

cat >"$work/kubeconfig" <<EOF
# Written by egret vagrant/provision/kubeconfig.sh.
apiVersion: v1
kind: Config
clusters:
  - name: egret-lab
    cluster:
      server: $server
      certificate-authority-data: $(base64 -w0 "$work/ca.crt")
users:
  - name: $user
    user:
      token: $EGRET_TOKEN
contexts:
  - name: egret-lab
    context:
      cluster: egret-lab
      user: $user
current-context: egret-lab
EOF
if ! cmp -s "$work/kubeconfig" "$out"; then
    install -D -m 0600 "$work/kubeconfig" "$out"
    log "wrote $out ($user at $server)"
fi
