#!/bin/sh
# Install the coffee-telemetry agent on a Raspberry Pi OS / Debian box, in one command:
#
#   sudo deploy/install.sh --site ourofino --name "Armazém Ouro Fino"
#
# Run it from a checkout or an unpacked source distribution (it installs that, with the
# locked versions of constraints.txt), or give --source a wheel. Running it again is
# safe: it upgrades the package and the systemd unit and keeps the site's files.
#
# What it does (each step only if not done yet):
#   - system group and user 'coffee' (no login, no home), a member of 'dialout';
#   - a venv in /opt/coffee-telemetry/venv with the package, pinned by constraints.txt;
#   - the site's files from `coffee-telemetry init` (site.toml, udev rules, broker and
#     Grafana files) in /etc/coffee-telemetry, never overwriting one that exists;
#     /etc/coffee-telemetry/credentials (0700) for secret files;
#   - the systemd unit (rewritten on every run: local changes go in a drop-in,
#     `systemctl edit coffee-telemetry`), the udev rules (if missing), and journald
#     limits for a small SD card (/etc/systemd/journald.conf.d/60-coffee-telemetry.conf);
#   - with systemd running: daemon-reload, enable the unit, reload udev and journald;
#     an upgrade restarts a running agent; a new install waits for the site.toml edit.
#
# --root DIR installs into DIR as if it were / (users in DIR/etc/passwd, with
# useradd --prefix; nothing started): for building images and for the tests.
# deploy/uninstall.sh undoes it (keeping config and data unless --purge).
set -eu

PREFIX=/opt/coffee-telemetry
VENV=$PREFIX/venv
ETC=/etc/coffee-telemetry
DATA=/var/lib/coffee-telemetry
UNIT=/etc/systemd/system/coffee-telemetry.service
UDEV=/etc/udev/rules.d/99-coffee-telemetry.rules
JOURNALD=/etc/systemd/journald.conf.d/60-coffee-telemetry.conf
USER_NAME=coffee

here=$(cd "$(dirname "$0")" && pwd)
ROOT=""
SOURCE=$(dirname "$here")
CONSTRAINTS=""
SITE=armazem
NAME=""
PYTHON=python3

usage() {
    cat <<EOF
Uso / usage: $0 [--site ID] [--name NOME] [--source DIR|WHEEL] [--constraints FILE]
                [--python PYTHON] [--root DIR]

  --site ID          id do site no site.toml novo (padrão: $SITE)
  --name NOME        nome do armazém, como as pessoas dizem (padrão: o id)
  --source DIR|WHEEL o que instalar (padrão: $SOURCE)
  --constraints FILE versões travadas (padrão: constraints.txt ao lado da fonte)
  --python PYTHON    o Python 3.11+ do venv (padrão: python3)
  --root DIR         instalar dentro de DIR como se fosse / (imagens, testes)
EOF
}

die() {
    echo "erro / error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
    --site) SITE=${2:?}; shift 2 ;;
    --name) NAME=${2:?}; shift 2 ;;
    --source) SOURCE=${2:?}; shift 2 ;;
    --constraints) CONSTRAINTS=${2:?}; shift 2 ;;
    --python) PYTHON=${2:?}; shift 2 ;;
    --root) ROOT=$(cd "${2:?}" && pwd); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[ "$ROOT" = / ] && ROOT=""
[ -n "$NAME" ] || NAME=$SITE
[ "$(id -u)" -eq 0 ] || die "rode como root (sudo $0 ...) / run as root"
if [ -z "$CONSTRAINTS" ]; then
    if [ -d "$SOURCE" ]; then CONSTRAINTS=$SOURCE/constraints.txt; else CONSTRAINTS=$(dirname "$here")/constraints.txt; fi
fi
[ -f "$CONSTRAINTS" ] || die "sem $CONSTRAINTS (as versões travadas); use --constraints"
[ -e "$SOURCE" ] || die "$SOURCE não existe"
live() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

# -- Python with venv -------------------------------------------------------------------
if ! "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    if [ -z "$ROOT" ] && command -v apt-get >/dev/null 2>&1; then
        echo "Instalando python3-venv (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' ||
        die "$PYTHON precisa ser 3.11 ou mais novo, com venv (apt-get install python3-venv)"
fi

# -- user and groups --------------------------------------------------------------------
for f in passwd group; do [ -f "$ROOT/etc/$f" ] || die "sem $ROOT/etc/$f"; done
prefix_opt() { if [ -n "$ROOT" ]; then echo "--prefix $ROOT"; fi; }
has_group() { grep -q "^$1:" "$ROOT/etc/group"; }
has_user() { grep -q "^$1:" "$ROOT/etc/passwd"; }
in_group() { grep -Eq "^$1:[^:]*:[^:]*:(.*,)?$2(,|$)" "$ROOT/etc/group"; }
# shellcheck disable=SC2046
{
    has_group dialout || groupadd $(prefix_opt) --system dialout
    has_group "$USER_NAME" || groupadd $(prefix_opt) --system "$USER_NAME"
    if ! has_user "$USER_NAME"; then
        useradd $(prefix_opt) --system --gid "$USER_NAME" --groups dialout \
            --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin \
            --comment "coffee-telemetry agent" "$USER_NAME"
        echo "Usuário $USER_NAME criado (grupo dialout)"
    fi
    in_group dialout "$USER_NAME" || usermod $(prefix_opt) --append --groups dialout "$USER_NAME"
}
uid=$(grep "^$USER_NAME:" "$ROOT/etc/passwd" | cut -d: -f3)
gid=$(grep "^$USER_NAME:" "$ROOT/etc/group" | cut -d: -f3)

# -- the venv and the package -----------------------------------------------------------
if [ ! -x "$ROOT$VENV/bin/python" ]; then
    echo "Criando o venv $VENV"
    install -d -m 0755 "$ROOT$PREFIX"
    "$PYTHON" -m venv "$ROOT$VENV"
fi
echo "Instalando $SOURCE no venv (versões de $(basename "$CONSTRAINTS"))"
"$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
    --constraint "$CONSTRAINTS" "$SOURCE"
"$ROOT$VENV/bin/coffee-telemetry" --version

# -- the site's files, from `coffee-telemetry init` -------------------------------------
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
"$ROOT$VENV/bin/coffee-telemetry" init "$stage/etc" --site "$SITE" --name "$NAME" \
    --data-dir "$DATA" >/dev/null
# init names the paths it was given: make them the installed ones.
for f in "$stage/etc/site.toml" "$stage/etc/systemd/coffee-telemetry.service"; do
    sed -i -e "s|$stage/etc|$ETC|g" -e "s|$ROOT$VENV/|$VENV/|g" "$f"
done
install -d -m 0755 "$ROOT$ETC"
new_site=no
[ -e "$ROOT$ETC/site.toml" ] || new_site=yes
(cd "$stage/etc" && find . -type f) | sort | while read -r rel; do
    rel=${rel#./}
    target=$ROOT$ETC/$rel
    if [ "$rel" = systemd/coffee-telemetry.service ] || [ ! -e "$target" ]; then
        install -d -m 0755 "$(dirname "$target")"
        cp -p "$stage/etc/$rel" "$target"
    fi
done
if [ "$new_site" = yes ]; then # readable by the agent, not by everyone
    chown "0:$gid" "$ROOT$ETC/site.toml"
    chmod 0640 "$ROOT$ETC/site.toml"
fi
install -d -m 0700 -o 0 -g 0 "$ROOT$ETC/credentials"
install -d -m 0750 -o "$uid" -g "$gid" "$ROOT$DATA"

# -- systemd unit, udev rules, journald limits ------------------------------------------
install -d -m 0755 "$ROOT$(dirname "$UNIT")" "$ROOT$(dirname "$UDEV")" "$ROOT$(dirname "$JOURNALD")"
install -m 0644 "$stage/etc/systemd/coffee-telemetry.service" "$ROOT$UNIT"
[ -e "$ROOT$UDEV" ] || install -m 0644 "$ROOT$ETC/udev/99-coffee-telemetry.rules" "$ROOT$UDEV"
cat >"$ROOT$JOURNALD.tmp" <<'EOF'
# Written by coffee-telemetry's deploy/install.sh (removed by deploy/uninstall.sh).
# The journal on a small SD card: capped, compressed, a quarter of a year at most, and
# a burst of log lines (a meter sending garbage) cannot flood it.
[Journal]
Compress=yes
SystemMaxUse=200M
SystemKeepFree=1G
SystemMaxFileSize=20M
RuntimeMaxUse=32M
MaxRetentionSec=3month
RateLimitIntervalSec=30s
RateLimitBurst=2000
EOF
mv "$ROOT$JOURNALD.tmp" "$ROOT$JOURNALD"
chmod 0644 "$ROOT$JOURNALD"

if live; then
    systemctl daemon-reload
    if command -v systemd-analyze >/dev/null 2>&1; then
        systemd-analyze verify "$UNIT" || echo "aviso: systemd-analyze verify reclamou de $UNIT" >&2
    fi
    systemctl restart systemd-journald
    if command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload && udevadm trigger --subsystem-match=tty --action=change
    fi
    systemctl enable coffee-telemetry.service
    systemctl try-restart coffee-telemetry.service
fi

echo
echo "Pronto / done: $ROOT$ETC, $ROOT$VENV, $ROOT$UNIT"
echo "Próximos passos / next:"
echo "  1. edite $ETC/site.toml (dispositivos, conta do broker) e"
echo "     coloque segredos em $ETC/credentials/ (veja o README, 'Segurança')"
echo "  2. $VENV/bin/coffee-telemetry check-config $ETC/site.toml"
echo "  3. systemctl restart coffee-telemetry && systemctl status coffee-telemetry"
echo "  4. adaptadores USB-serial: $UDEV (nomes estáveis por número de série)"
