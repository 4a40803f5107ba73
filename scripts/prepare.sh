#!/usr/bin/env bash
# Idempotent set-up run before `npm start`, `npm test` and `npm run bench`:
#   1. SoftHSM2 present (unless an external PKCS#11 module is configured),
#   2. node_modules matching package-lock.json,
#   3. TypeScript compiled and the web console built when sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."
source native-config/node-headers.sh

softhsm_present() {
  for f in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so /usr/lib64/softhsm/libsofthsm2.so \
           /usr/lib64/pkcs11/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
    [ -f "$f" ] && return 0
  done
  return 1
}

if [ -z "${P11KMS_PKCS11_MODULE:-}" ] && ! softhsm_present; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "p11kms: installing SoftHSM2 (apt-get install softhsm2)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
  else
    echo "p11kms: SoftHSM2 is not installed. Install it as root (Debian/Ubuntu: apt-get install softhsm2;" >&2
    echo "        Fedora/RHEL: dnf install softhsm) or set P11KMS_PKCS11_MODULE to your HSM's PKCS#11 library." >&2
    exit 1
  fi
fi

lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.p11kms-lock-sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  echo "p11kms: installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$lock_hash" > "$stamp"
fi

# A source newer than its compiled file. (An incremental `tsc --noEmit` run records sources as
# built without writing them, so the build info alone cannot be trusted.)
stale_output() {
  find src scripts -name '*.ts' -not -name '*.d.ts' -not -path 'src/console/*' | while read -r f; do
    [ "dist/${f%.ts}.js" -nt "$f" ] || { echo "$f"; break; }
  done
}
if [ ! -f dist/.tsbuildinfo ] || [ -n "$(find src scripts tsconfig.json package-lock.json -newer dist/.tsbuildinfo -not -path 'src/console/*' -print -quit)" ] || [ -n "$(stale_output)" ]; then
  echo "p11kms: compiling TypeScript" >&2
  npx tsc -p tsconfig.json
  if [ -n "$(stale_output)" ]; then rm -f dist/.tsbuildinfo; npx tsc -p tsconfig.json; fi
  touch dist/.tsbuildinfo
fi

# The web console (src/console, Vite + Preact) is built into dist/console, served at /console/.
if [ ! -f dist/console/index.html ] || [ -n "$(find src/console package-lock.json -newer dist/console/index.html -print -quit)" ]; then
  echo "p11kms: building the web console (vite)" >&2
  npx vite build --config src/console/vite.config.ts --logLevel warn
fi
