#!/bin/sh
# re6mesh installer for Linux distributions without the .deb: installs a built or downloaded
# `mesh` binary, both systemd units, shell completions and man pages, and creates the system
# group and user re6mesh. Enables and starts nothing.
#
#   sudo sh installers/install.sh [--binary PATH] [--prefix /usr/local] [--destdir DIR]
#   sudo sh installers/install.sh --uninstall [--prefix /usr/local]
#
#   --binary PATH   the mesh binary (default: target/release/mesh, else `mesh` next to this script)
#   --prefix DIR    where bin/ and share/ go (default /usr/local); units go to /etc/systemd/system
#   --destdir DIR   stage everything under DIR (packaging, tests): no group or user is
#                   created, no systemctl is run
#   --uninstall     remove what an install put there (the group, the user and
#                   /var/lib/re6mesh stay)
set -eu

prefix=/usr/local
destdir=""
binary=""
uninstall=false
while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --uninstall) uninstall=true; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
bindir="$prefix/bin"
unitdir=/etc/systemd/system
bashdir="$prefix/share/bash-completion/completions"
zshdir="$prefix/share/zsh/site-functions"
fishdir="$prefix/share/fish/vendor_completions.d"
mandir="$prefix/share/man/man1"
autostartdir=/etc/xdg/autostart
units="re6mesh.service re6mesh-registry.service"

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run it as root (sudo), or stage with --destdir DIR" >&2
    exit 1
fi

if $uninstall; then
    if [ -z "$destdir" ] && command -v systemctl >/dev/null 2>&1; then
        for u in $units; do systemctl disable --now "$u" >/dev/null 2>&1 || true; done
    fi
    for u in $units; do rm -f "$destdir$unitdir/$u"; done
    rm -f "$destdir$autostartdir/re6mesh-tray.desktop"
    rm -f "$destdir$bindir/mesh" "$destdir$bashdir/mesh" "$destdir$zshdir/_mesh" \
        "$destdir$fishdir/mesh.fish" "$destdir$mandir"/mesh.1 "$destdir$mandir"/mesh-*.1
    if [ -z "$destdir" ] && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
    echo "re6mesh removed from $destdir$prefix and $destdir$unitdir (group and user re6mesh and /var/lib/re6mesh kept)"
    exit 0
fi

if [ -z "$binary" ]; then
    for b in "$here/../target/release/mesh" "$here/mesh"; do
        if [ -x "$b" ]; then binary="$b"; break; fi
    done
fi
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "install.sh: no mesh binary: build it (cargo build --release) or give --binary PATH" >&2
    exit 1
fi
if [ ! -f "$here/systemd/re6mesh.service" ]; then
    echo "install.sh: $here/systemd/ is missing (run the script from its directory in the source tree)" >&2
    exit 1
fi

install -d -m 755 "$destdir$bindir" "$destdir$unitdir" "$destdir$bashdir" "$destdir$zshdir" \
    "$destdir$fishdir" "$destdir$mandir" "$destdir$autostartdir"
install -m 755 "$binary" "$destdir$bindir/mesh"
for u in $units; do
    sed "s#/usr/local/bin/mesh#$bindir/mesh#g" "$here/systemd/$u" >"$destdir$unitdir/$u"
    chmod 644 "$destdir$unitdir/$u"
done
# the tray, started with each desktop session (`mesh tray`)
sed "s#/usr/local/bin/mesh#$bindir/mesh#g" "$here/xdg/re6mesh-tray.desktop" >"$destdir$autostartdir/re6mesh-tray.desktop"
chmod 644 "$destdir$autostartdir/re6mesh-tray.desktop"
"$binary" completions bash >"$destdir$bashdir/mesh"
"$binary" completions zsh >"$destdir$zshdir/_mesh"
"$binary" completions fish >"$destdir$fishdir/mesh.fish"
"$binary" man --out "$destdir$mandir" >/dev/null
chmod 644 "$destdir$bashdir/mesh" "$destdir$zshdir/_mesh" "$destdir$fishdir/mesh.fish" "$destdir$mandir"/*.1

if [ -z "$destdir" ]; then
    if ! getent group re6mesh >/dev/null 2>&1; then
        groupadd --system re6mesh
        echo "created group re6mesh"
    fi
    if ! getent passwd re6mesh >/dev/null 2>&1; then
        useradd --system --gid re6mesh --home-dir /var/lib/re6mesh/registry --no-create-home \
            --shell /usr/sbin/nologin --comment "re6mesh node and registry" re6mesh
        echo "created user re6mesh (the node and registry units run as it)"
    fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
fi
echo "installed $destdir$bindir/mesh, the units in $destdir$unitdir, the tray's autostart entry, completions and man pages"
echo "next: sudo mesh join TOKEN, then sudo systemctl enable --now re6mesh (nothing was enabled)"
