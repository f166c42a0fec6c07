#!/bin/sh
# Undo deploy/install.sh:
#
#   sudo deploy/uninstall.sh            # the agent goes; config and data stay
#   sudo deploy/uninstall.sh --purge    # and /etc/coffee-telemetry, /var/lib/coffee-telemetry
#                                       # and the 'coffee' user and group
#
# Stops and disables the unit, removes it, the udev rules, the journald limits and
# /opt/coffee-telemetry. Without --purge the site's config, its secrets, the data
# (outbox, history, lots, maintenance) and the user that owns them are kept, so a
# later install.sh picks up where this one stopped. --root DIR as in install.sh.
set -eu

PREFIX=/opt/coffee-telemetry
ETC=/etc/coffee-telemetry
DATA=/var/lib/coffee-telemetry
UNIT=/etc/systemd/system/coffee-telemetry.service
UDEV=/etc/udev/rules.d/99-coffee-telemetry.rules
JOURNALD=/etc/systemd/journald.conf.d/60-coffee-telemetry.conf
USER_NAME=coffee

ROOT=""
PURGE=no
while [ $# -gt 0 ]; do
    case $1 in
    --purge) PURGE=yes; shift ;;
    --root) ROOT=$(cd "${2:?}" && pwd); shift 2 ;;
    -h | --help) echo "Uso / usage: $0 [--purge] [--root DIR]"; exit 0 ;;
    *) echo "Uso / usage: $0 [--purge] [--root DIR]" >&2; exit 2 ;;
    esac
done
[ "$ROOT" = / ] && ROOT=""
[ "$(id -u)" -eq 0 ] || { echo "erro: rode como root / run as root" >&2; exit 1; }
live() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

if live; then
    systemctl disable --now coffee-telemetry.service 2>/dev/null || true
fi
rm -f "$ROOT$UNIT" "$ROOT$UDEV" "$ROOT$JOURNALD"
rm -rf "$ROOT$PREFIX"
if live; then
    systemctl daemon-reload
    systemctl restart systemd-journald
    if command -v udevadm >/dev/null 2>&1; then udevadm control --reload; fi
fi

if [ "$PURGE" = yes ]; then
    rm -rf "$ROOT$ETC" "$ROOT$DATA"
    if [ -n "$ROOT" ]; then p="--prefix $ROOT"; else p=""; fi
    # shellcheck disable=SC2086
    if grep -q "^$USER_NAME:" "$ROOT/etc/passwd"; then userdel $p "$USER_NAME"; fi
    # shellcheck disable=SC2086
    if grep -q "^$USER_NAME:" "$ROOT/etc/group"; then groupdel $p "$USER_NAME"; fi
    echo "Removido, com configuração, dados e usuário / removed, with config, data and user"
else
    echo "Removido / removed. Mantidos / kept: $ROOT$ETC, $ROOT$DATA, usuário $USER_NAME"
    echo "(--purge apaga também / also deletes these)"
fi
