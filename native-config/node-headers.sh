#!/usr/bin/env bash
# Native addons (pkcs11js, better-sqlite3) build with node-gyp, which downloads Node's headers
# unless told where they are. Offline machines ship them with Node itself: point npm at them.
# Sourced by scripts/prepare.sh.
if [ -z "${npm_config_nodedir:-}" ]; then
  node_prefix=$(dirname "$(dirname "$(command -v node)")")
  if [ -f "$node_prefix/include/node/node.h" ]; then
    export npm_config_nodedir="$node_prefix"
  fi
fi
