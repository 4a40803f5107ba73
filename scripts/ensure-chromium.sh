#!/usr/bin/env bash
# Idempotent: makes Debian's Chromium available for the console's browser tests. Prints the
# browser's path on success; on failure prints why on stderr and exits 1 (the tests then skip
# with that reason). Browsers are never downloaded by a test tool here: only apt-get.
set -uo pipefail
for candidate in "${P11KMS_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; exit 0; fi
done
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "Chromium is not installed and cannot be installed here (needs root and apt-get): apt-get install chromium" >&2
  exit 1
fi
echo "p11kms: installing Chromium for the console tests (apt-get install chromium)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; }; then
  echo "apt-get install chromium failed" >&2
  exit 1
fi
[ -x /usr/bin/chromium ] && echo /usr/bin/chromium && exit 0
echo "apt-get install chromium did not provide /usr/bin/chromium" >&2
exit 1
