#!/bin/sh
# setup.sh: installs what spotq builds against on Debian 12 (run as root, or with sudo available).
set -e
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
PKGS="build-essential pkg-config clang libopenblas-dev liblapacke-dev libzstd-dev libcjson-dev libpcre2-dev libopenmpi-dev openmpi-bin"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
