#!/usr/bin/env bash
# The dashboard's browser tests drive Debian's Chromium headless. `make test` calls this first:
# it installs the Debian package when it is missing and this machine can (root and apt-get).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing and cannot be installed here (needs root and apt-get);" \
       "the browser tests will be skipped" >&2
  exit 0
fi
echo "installing Debian's chromium for the dashboard's browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null 2>&1
  apt-get install -y -qq chromium >/dev/null
}
