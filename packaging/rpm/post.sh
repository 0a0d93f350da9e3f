#!/bin/sh
# %post of @NAME@: what %systemd_post does (enable per the presets; the package's own preset
# enables it), after creating the system user. RPM convention: never started on install.
# On upgrade, %postun restarts it.
name=@NAME@
systemd-sysusers "$name.conf" || :
if [ -e "/usr/lib/tmpfiles.d/$name.conf" ]; then
    systemd-tmpfiles --create "$name.conf" >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset "$name.service" >/dev/null 2>&1 || :
fi
