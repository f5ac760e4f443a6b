#!/bin/sh
# Install edged on a 64-bit Debian / Raspberry Pi OS gateway: the system user, the directories,
# a venv in /opt/edged/venv, /etc/edged/config.toml, the state key and the systemd unit.
# Run it from a checkout (or an unpacked sdist) as root. Safe to run again: it never overwrites
# a config or a key that is already there (--mqtt-password-file replaces the password); the
# venv and the unit are updated.
#
#   sudo scripts/install.sh                                  # broker without a login
#   sudo scripts/install.sh --mqtt-password-file pw.txt      # broker with a login
#
# Options:
#   --mqtt-password-file F  copy F to /etc/edged/mqtt-password (0600) and add the drop-in
#                           edged.service.d/mqtt-password.conf that passes it to the service as
#                           the credential edged-mqtt-password. Without it the unit loads no
#                           password credential (systemd fails a unit whose LoadCredential= file
#                           is missing, so the line lives in the drop-in, not the unit).
#   --python P              interpreter for the venv (default: python3; needs 3.11 or newer)
#   --package SPEC          what pip installs (default: this checkout), e.g. a wheel file
#   --root DIR              install into DIR instead of / (a staging tree or a chroot; used by
#                           tests/test_install.py). The venv then lives at DIR/opt/edged/venv
#                           and the service is neither enabled nor started.
#   --no-start              install and enable, but do not start the service
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=""
PYTHON=python3
PACKAGE=""
PASSWORD_FILE=""
START=yes

while [ $# -gt 0 ]; do
    case "$1" in
        --mqtt-password-file) PASSWORD_FILE=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --package) PACKAGE=$2; shift 2 ;;
        --root) ROOT=$(cd "$2" && pwd); shift 2 ;;
        --no-start) START=no; shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$PACKAGE" ] || PACKAGE=$SRC

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
[ -f "$SRC/systemd/edged.service" ] && [ -f "$SRC/config.toml" ] || die "run from an edged checkout ($SRC has no systemd/edged.service)"
[ -z "$PASSWORD_FILE" ] || [ -r "$PASSWORD_FILE" ] || die "cannot read $PASSWORD_FILE"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PYTHON is not Python 3.11 or newer (use --python)"

# -- user and groups ---------------------------------------------------------------------------
# The unit runs as edged:edged with SupplementaryGroups=i2c; systemd refuses to start it if the
# group i2c does not exist (Raspberry Pi OS has it, plain Debian does not), so make sure it does.
ROOTOPT=""
[ -z "$ROOT" ] || ROOTOPT="--root $ROOT"
# shellcheck disable=SC2086  # ROOTOPT is two words or none
getent_in_root() { grep -q "^$2:" "$ROOT/etc/$1" 2>/dev/null; }
if ! getent_in_root group i2c; then
    groupadd $ROOTOPT --system i2c
    say "created group i2c (owner of /dev/i2c-* on Raspberry Pi OS)"
fi
if ! getent_in_root passwd edged; then
    useradd $ROOTOPT --system --user-group --home-dir /var/lib/edged --no-create-home \
        --shell /usr/sbin/nologin edged
    say "created system user edged"
fi

# -- directories -------------------------------------------------------------------------------
# /var/lib/edged and /run/edged are the unit's StateDirectory= and RuntimeDirectory=: systemd
# creates them with the right owner and mode at start.
install -d -m 0755 "$ROOT/opt/edged" "$ROOT/etc/systemd/system"
install -d -m 0750 -o root -g edged "$ROOT/etc/edged" 2>/dev/null \
    || install -d -m 0750 "$ROOT/etc/edged"   # --root: the group exists only inside DIR
[ -z "$ROOT" ] || chgrp "$(sed -n 's/^edged:[^:]*:\([0-9]*\):.*/\1/p' "$ROOT/etc/group")" "$ROOT/etc/edged"

# -- venv --------------------------------------------------------------------------------------
VENV=$ROOT/opt/edged/venv
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$PACKAGE"
VERSION=$("$VENV/bin/edged" --version)
say "installed $VERSION in /opt/edged/venv"

# -- config and secrets ------------------------------------------------------------------------
CONF=$ROOT/etc/edged/config.toml
if [ ! -e "$CONF" ]; then
    # the shipped config (simulated sensors), with the state and status where the unit keeps them
    sed -e 's|^dir = "state" .*|dir = "/var/lib/edged"            # the unit'"'"'s StateDirectory|' \
        "$SRC/config.toml" > "$CONF.tmp"
    printf '\n[ops]\nstatus_file = "/run/edged/status.json"   # the unit'"'"'s RuntimeDirectory (tmpfs)\n' >> "$CONF.tmp"
    chmod 0640 "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    say "wrote /etc/edged/config.toml (simulated sensors: edit [sensors], [tasks] and [mqtt])"
fi
chgrp --reference="$ROOT/etc/edged" "$CONF"
if [ ! -e "$ROOT/etc/edged/state.key" ]; then
    (umask 077; "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' > "$ROOT/etc/edged/state.key")
    say "generated /etc/edged/state.key (checkpoint HMAC key; back it up with the models)"
fi
DROPIN=$ROOT/etc/systemd/system/edged.service.d
if [ -n "$PASSWORD_FILE" ]; then
    (umask 077; cp "$PASSWORD_FILE" "$ROOT/etc/edged/mqtt-password")
    install -d -m 0755 "$DROPIN"
    cat > "$DROPIN/mqtt-password.conf" <<'EOF'
# Written by scripts/install.sh --mqtt-password-file: the broker password as a credential.
# Remove this file (and /etc/edged/mqtt-password) for a broker without a login.
[Service]
LoadCredential=edged-mqtt-password:/etc/edged/mqtt-password
EOF
    say "broker password in /etc/edged/mqtt-password (drop-in $DROPIN/mqtt-password.conf); set [mqtt] username"
else
    say "no broker password: edged connects without a login (see docs/deployment.md to add one)"
fi

# -- unit --------------------------------------------------------------------------------------
install -m 0644 "$SRC/systemd/edged.service" "$ROOT/etc/systemd/system/edged.service"
say "installed /etc/systemd/system/edged.service"

"$VENV/bin/edged" check -c "$CONF" > /dev/null || die "edged check rejects $CONF (see above)"

if [ -n "$ROOT" ]; then
    say "staged in $ROOT: not enabled (verify with systemd-analyze verify --root=$ROOT edged.service)"
elif [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable edged.service
    if [ "$START" = yes ]; then
        systemctl restart edged.service
        say "started: systemctl status edged; edged status -c /etc/edged/config.toml"
    fi
else
    say "systemd is not running here: start with systemctl enable --now edged once it is"
fi
