#!/usr/bin/env bash
# Install what tests/test_browser.py needs on a fresh Debian machine (run as root): Debian's chromium.
# The test drives it with the Playwright *Python* package from requirements.txt and executable_path=/usr/bin/chromium,
# so `playwright install` (a browser download) is never needed. Idempotent: returns at once when chromium works.
set -euo pipefail

CHROMIUM="${FASHION_COURSE_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ] && version="$("$CHROMIUM" --version 2>/dev/null)"; then
    echo "install_browser: $version already installed at $CHROMIUM"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: chromium is missing and this is not root; run: sudo apt-get install -y chromium" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core >/dev/null
echo "install_browser: installed $(/usr/bin/chromium --version 2>/dev/null) at /usr/bin/chromium"
