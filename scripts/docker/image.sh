#!/usr/bin/env bash
# `npm run image`: builds p11kms:local from this checkout with softhsm/Dockerfile, then prints
# the image's size and its start-up times. Needs nothing but a Docker engine (started here when
# possible, see engine.sh) and the Debian archive and npm registry; no container registry: the
# base images are made locally (base-images.sh) unless P11KMS_BASE_REGISTRY names a registry
# (e.g. docker.io/library/ for the official node:20-bookworm-slim and debian:bookworm-slim).
#   P11KMS_IMAGE           tag to build (default p11kms:local)
#   P11KMS_IMAGE_MEASURE=0 skip the start-up measurement
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${P11KMS_IMAGE:-p11kms:local}
base_registry=${P11KMS_BASE_REGISTRY:-p11kms-local/}
say() { echo "p11kms image: $*" >&2; }

bash scripts/docker/engine.sh
[ "$base_registry" = p11kms-local/ ] && bash scripts/docker/base-images.sh

# Builds use the host's network. Pin the archive's and the registry's names to the addresses the
# host resolves, so the build containers make no DNS queries of their own.
add_hosts=()
hosts=$( { sed -n 's#^URIs: *[a-z]*://\([^/:]*\).*#\1#p' /etc/apt/sources.list.d/*.sources 2>/dev/null
           npm config get registry 2>/dev/null | sed -n 's#^[a-z]*://\([^/:]*\).*#\1#p'; } | sort -u)
for host in $hosts; do
  address=$(getent ahostsv4 "$host" 2>/dev/null | awk 'NR == 1 { print $1 }')
  [ -n "$address" ] && add_hosts+=(--add-host "$host:$address")
done

# Certificate authorities this machine added itself (a TLS-inspecting proxy) for the build's npm.
rm -f softhsm/build-ca/*.crt
for ca in /usr/local/share/ca-certificates/*.crt; do [ -f "$ca" ] && cp "$ca" softhsm/build-ca/; done

hash=$(bash scripts/docker/source-hash.sh)
say "building $image (base: ${base_registry}…)"
start=$SECONDS
docker build --network host "${add_hosts[@]}" \
  --build-arg BASE_REGISTRY="$base_registry" \
  --label org.opencontainers.image.title=p11kms \
  --label p11kms.source-hash="$hash" \
  -f softhsm/Dockerfile -t "$image" . 2>&1 | grep -v -e '^DEPRECATED' -e 'buildx' -e 'docs.docker.com/go/buildx' -e '^ *$' >&2
build_s=$((SECONDS - start))
size=$(docker image inspect "$image" --format '{{.Size}}')
say "$image built in ${build_s} s; size $((size / 1000000)) MB ($size bytes)"

if [ "${P11KMS_IMAGE_MEASURE:-1}" = 1 ]; then
  node scripts/docker/measure-start.mjs "$image"
fi
