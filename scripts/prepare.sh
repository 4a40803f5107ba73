#!/usr/bin/env bash
# Idempotent set-up run before `npm start`, `npm test` and `npm run bench`:
#   1. SoftHSM2 present (unless an external PKCS#11 module is configured),
#   2. node_modules matching package-lock.json, as npm records it (scripts/installed-tree.mjs);
#      when npm ci must run: the build tools its native addons need (python3, make, g++),
#   3. TypeScript compiled and the web console built when sources changed.
# Each step that has work to do says so, with the time it took; a set-up with nothing to do is silent.
set -euo pipefail
cd "$(dirname "$0")/.."
source native-config/node-headers.sh

started=$SECONDS
say() { echo "p11kms: $*" >&2; }
elapsed() { echo "$((SECONDS - started)) s"; }

# Installs Debian packages as root, or says exactly what to install and stops.
apt_install() {
  local what=$1 other=$2
  shift 2
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    say "installing $what (apt-get install $*)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    say "installed $what ($(elapsed))"
  else
    say "$what is not installed. Install it as root (Debian/Ubuntu: apt-get install $*;"
    say "        $other) and run this again."
    exit 1
  fi
}

softhsm_present() {
  for f in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so /usr/lib64/softhsm/libsofthsm2.so \
           /usr/lib64/pkcs11/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
    [ -f "$f" ] && return 0
  done
  return 1
}

if [ -z "${P11KMS_PKCS11_MODULE:-}" ] && ! softhsm_present; then
  apt_install SoftHSM2 "Fedora/RHEL: dnf install softhsm; or set P11KMS_PKCS11_MODULE to your HSM's PKCS#11 library" softhsm2
fi

# Every 15 s while npm ci runs: how many packages are unpacked, which native addon is compiling,
# and the time since the set-up began.
npm_progress() {
  local total=$1 natives=$2 announced=""
  while sleep 15; do
    local n
    # compgen fails when nothing matches yet: under `set -e -o pipefail` that must not end the loop.
    n=$( { compgen -G 'node_modules/*/package.json' || true; compgen -G 'node_modules/@*/*/package.json' || true; } 2>/dev/null | wc -l)
    local building=""
    for pkg in $natives; do
      if [ -d "node_modules/$pkg/build" ] && [ -z "$(compgen -G "node_modules/$pkg/build/Release/*.node" 2>/dev/null)" ]; then building="$pkg"; fi
    done
    if [ -n "$building" ] && [ "$building" != "$announced" ]; then
      say "npm ci: compiling $building (native addon, node-gyp)"
      announced=$building
    fi
    if [ "$n" -ge "$total" ]; then
      say "npm ci: all packages unpacked; building native addons${announced:+ ($announced)}, $(elapsed)"
    else
      say "npm ci: $n of about $total packages unpacked, $(elapsed)"
    fi
  done
}

if ! reason=$(node scripts/installed-tree.mjs 2>&1); then
  natives=$(node scripts/installed-tree.mjs --native | tr '\n' ' ')
  missing=()
  command -v python3 >/dev/null || missing+=(python3)
  command -v make >/dev/null || missing+=(make)
  command -v g++ >/dev/null || command -v c++ >/dev/null || missing+=(g++)
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "the build tools for the native addons (${natives% })" "Fedora/RHEL: dnf install python3 make gcc-c++" "${missing[@]}"
  fi
  total=$(node -e "const p=require('./package-lock.json').packages;console.log(Object.keys(p).filter(k=>/^node_modules\/(@[^/]+\/)?[^/]+$/.test(k)&&!p[k].optional).length)")
  say "installing npm dependencies (npm ci: $reason)"
  say "npm ci compiles native addons from source: ${natives% } (a few minutes on 2 cores)"
  npm_progress "$total" "$natives" &
  progress=$!
  trap 'kill $progress 2>/dev/null || true' EXIT
  npm ci --no-audit --no-fund --loglevel=error >&2
  kill $progress 2>/dev/null || true
  trap - EXIT
  say "npm dependencies installed ($(elapsed))"
fi

# Our own stamp, not dist/.tsbuildinfo: `tsc --noEmit` rewrites that one without emitting anything.
built=dist/.p11kms-built
# A source newer than its compiled file (the same incremental build info can leave one unwritten).
stale_output() {
  find src scripts -name '*.ts' -not -name '*.d.ts' -not -path 'src/console/*' | while read -r f; do
    [ "dist/${f%.ts}.js" -nt "$f" ] || { echo "$f"; break; }
  done
}
if [ ! -f $built ] || [ -n "$(find src scripts tsconfig.json package-lock.json -newer $built -not -path 'src/console/*' -print -quit)" ]; then
  say "compiling TypeScript"
  npx tsc -p tsconfig.json
  if [ -n "$(stale_output)" ]; then rm -f dist/.tsbuildinfo; npx tsc -p tsconfig.json; fi
  touch $built
  say "compiled ($(elapsed))"
fi

# The web console (src/console, Vite + Preact) is built into dist/console, served at /console/.
if [ ! -f dist/console/index.html ] || [ -n "$(find src/console package-lock.json -newer dist/console/index.html -print -quit)" ]; then
  say "building the web console (vite)"
  npx vite build --config src/console/vite.config.ts --logLevel warn
  say "console built ($(elapsed))"
fi
