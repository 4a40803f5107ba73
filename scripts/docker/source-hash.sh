#!/usr/bin/env bash
# Prints a hash of everything the image is built from (the files .dockerignore lets into the
# build context). `npm run image` labels p11kms:local with it; the container tests rebuild the
# image when the label differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
find package.json package-lock.json native-config tsconfig.json src scripts softhsm .dockerignore -type f ! -path "softhsm/build-ca/*.crt" ! -path "src/testcontainers/*" -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
