#!/bin/sh
# %preun of @NAME@: what %systemd_preun does (disable and stop on erase, not on upgrade). The
# agent also takes its data path off the node: its binary goes with the package.
name=@NAME@
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now "$name.service" >/dev/null 2>&1 || :
    if [ "$name" = egret-agent ]; then
        egret-agent uninstall --config /etc/egret/agent.toml >/dev/null 2>&1 || :
    fi
fi
