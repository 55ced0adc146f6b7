#!/usr/bin/env bash
# Installs the .deb on a clean Debian 12 system with apt and checks that it works:
#   - a minimal bookworm root made by debootstrap (cached in $CLEAN_ROOT), nothing else installed;
#   - apt-get install ./upcycle-workbench_*.deb resolves every dependency from Debian;
#   - `upcycle --version` and `upcycle demo --quick` run; `upcycle-studio` opens under Xvfb;
#   - the .desktop entry and the AppStream metainfo validate;
#   - apt-get purge removes every installed file.
# Usage: packaging/check-install.sh [--deb FILE] [--log FILE]     (as root; writes the log it prints)
set -euo pipefail
cd "$(dirname "$0")/.."
deb="" ; log="docs/install-check.txt"
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb="$2"; shift 2;;
    --log) log="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
[ -n "$deb" ] || deb=$(bash scripts/package.sh | tail -1)
root=${CLEAN_ROOT:-/var/tmp/upcycle-clean-bookworm}
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
if [ ! -x "$root/usr/bin/apt-get" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  rm -rf "$root.tmp"
  debootstrap --variant=minbase bookworm "$root.tmp" "$mirror" >/dev/null
  mv "$root.tmp" "$root"
fi
# A throw-away copy of the clean root for this check.
work=$(mktemp -d /var/tmp/upcycle-check.XXXXXX)
cleanup() {
  for m in dev/pts dev proc sys; do umount -l "$work/root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cp -a "$root" "$work/root"
for m in dev dev/pts proc sys; do mount --bind "/$m" "$work/root/$m"; done
cp /etc/resolv.conf "$work/root/etc/resolv.conf" 2>/dev/null || true
cp "$deb" "$work/root/tmp/"
pkg=/tmp/$(basename "$deb")
in_root() { chroot "$work/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 bash -c "$1"; }

exec > >(tee "$log") 2>&1
echo "# upcycle-workbench install check, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# package: $(basename "$deb") ($(du -h "$deb" | cut -f1)); clean root: debootstrap --variant=minbase bookworm"
echo "\$ dpkg-deb --field $(basename "$deb") Depends"
dpkg-deb --field "$deb" Depends | tr ',' '\n' | sed 's/^ */    /'
echo
echo "\$ apt-get install ./$(basename "$deb")   (in the clean root; dpkg packages before: $(in_root 'dpkg -l | grep -c ^ii'))"
in_root "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkg desktop-file-utils appstream >/tmp/apt.log 2>&1 || { tail -30 /tmp/apt.log; exit 1; }"
echo "    ok; dpkg packages after: $(in_root 'dpkg -l | grep -c ^ii')"
echo
echo "\$ upcycle --version"
in_root "upcycle --version"
echo
echo "\$ upcycle demo --quick   (in an empty folder)"
in_root "mkdir -p /tmp/demo && cd /tmp/demo && time upcycle demo --quick 2>&1 | tail -16"
echo
echo "\$ xvfb-run upcycle-studio --screenshot /tmp/studio.png"
in_root "xvfb-run -a -s '-screen 0 1400x900x24' upcycle-studio --screenshot /tmp/studio.png 2>&1 | grep -v -e propagateSizeHints -e XDG_RUNTIME_DIR"
cp "$work/root/tmp/studio.png" docs/screenshots/installed-studio.png
echo "    saved as docs/screenshots/installed-studio.png ($(du -h docs/screenshots/installed-studio.png | cut -f1))"
echo
echo "\$ desktop-file-validate; appstreamcli validate --no-net"
in_root "desktop-file-validate /usr/share/applications/io.github.upcycle_workbench.Studio.desktop && echo '    desktop entry: valid'"
in_root "appstreamcli validate --no-net --pedantic /usr/share/metainfo/io.github.upcycle_workbench.Studio.metainfo.xml 2>&1 | sed 's/^/    /' | tail -8" || true
echo
echo "\$ dpkg -L upcycle-workbench | grep -v /doc/"
in_root "dpkg -L upcycle-workbench | grep -v -e /doc/ | while read f; do [ -f \"\$f\" ] && echo \"    \$f\"; done"
in_root "dpkg -L upcycle-workbench | while read f; do [ -f \"\$f\" ] && echo \"\$f\"; done > /tmp/installed.txt"
echo
echo "\$ apt-get purge upcycle-workbench"
in_root "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q upcycle-workbench >/dev/null"
left=$(in_root 'n=0; while read f; do [ -e "$f" ] && { echo "    left: $f"; n=$((n+1)); }; done < /tmp/installed.txt; echo "$n"' | tail -1)
echo "    files of the package left after purge: $left"
[ "$left" = "0" ] || exit 1
echo
echo "# all checks passed"
