#!/usr/bin/env bash
# Makes sure Debian's chromium and chromium-driver are installed for the dashboard browser test.
# Without root (or without apt) it only warns: that test then skips with its reason.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "browser.sh: chromium/chromedriver missing and cannot install them; the browser test will skip" >&2
  exit 0
fi
echo "browser.sh: installing chromium and chromium-driver (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
