#!/bin/sh
# %postun of @NAME@: what %systemd_postun_with_restart does (restart a running service on
# upgrade, when its config checks), and on erase remove the state the service left.
name=@NAME@
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    if runuser -u "$name" -- "$name" check --quiet --config "/etc/egret/${name#egret-}.toml" >/dev/null 2>&1; then
        systemctl try-restart "$name.service" >/dev/null 2>&1 || :
    fi
else
    case "$name" in
        egret-gateway) rm -rf /run/egret-gateway ;;
        egret-agent) rm -rf /run/egret /sys/fs/bpf/egret ;;
    esac
fi
