#!/usr/bin/env bash
# Local stand-ins for the two official base images the Dockerfile names, for machines that reach
# the Debian archive but no container registry:
#   p11kms-local/debian:bookworm-slim   Debian bookworm minbase from mmdebstrap, without docs,
#                                       man pages and locales (as debian:bookworm-slim), imported
#                                       with `docker import`
#   p11kms-local/node:20-bookworm-slim  the same plus this machine's Node 20 (node, npm, headers)
#                                       under /usr/local, as in node:20-bookworm-slim
# Idempotent: an image that exists is kept (P11KMS_REBUILD_BASE=1 rebuilds both).
set -euo pipefail
cd "$(dirname "$0")/../.."

debian_image=p11kms-local/debian:bookworm-slim
node_image=p11kms-local/node:20-bookworm-slim
say() { echo "p11kms image: $*" >&2; }
have_image() { [ "${P11KMS_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have_image "$debian_image"; then
  if ! command -v mmdebstrap >/dev/null; then
    [ "$(id -u)" = 0 ] || { say "mmdebstrap is missing (apt-get install mmdebstrap, as root)"; exit 1; }
    say "installing mmdebstrap (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
  fi
  # The host's own archive configuration (bookworm, -updates, -security), else Debian's defaults.
  sources=/etc/apt/sources.list.d/debian.sources
  if [ ! -f "$sources" ]; then
    sources=$(mktemp --suffix=.list)
    printf 'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' >"$sources"
  fi
  say "building $debian_image with mmdebstrap"
  start=$SECONDS
  # dpkg's path excludes stay in the image, so later apt installs skip the same files. usrmerge
  # (and the perl it pulls in, ~45 MB) only matters while the system is being merged: purged.
  mmdebstrap --variant=minbase --mode=root --quiet \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq usrmerge perl libperl5.36 perl-modules-5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl >/dev/null' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log; : >"$1"/etc/resolv.conf' \
    bookworm - "$sources" | docker import --change 'CMD ["bash"]' - "$debian_image" >/dev/null
  say "$debian_image built in $((SECONDS - start)) s"
fi

if ! have_image "$node_image"; then
  node_bin=$(command -v node || true)
  case "$(node --version 2>/dev/null)" in
    v20.*) ;;
    *) say "Node 20 is needed on this machine to build $node_image (found: ${node_bin:-none})"; exit 1 ;;
  esac
  prefix=$(dirname "$(dirname "$(readlink -f "$node_bin")")")
  npm_dir=$(npm root -g)/npm
  [ -f "$prefix/include/node/node.h" ] || { say "Node's headers are missing under $prefix/include/node"; exit 1; }
  [ -f "$npm_dir/bin/npm-cli.js" ] || { say "npm is missing under $npm_dir"; exit 1; }
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  mkdir -p "$context/usr/local/bin" "$context/usr/local/lib/node_modules" "$context/usr/local/include"
  cp "$(readlink -f "$node_bin")" "$context/usr/local/bin/node"
  cp -a "$npm_dir" "$context/usr/local/lib/node_modules/npm"
  cp -a "$prefix/include/node" "$context/usr/local/include/node"
  say "building $node_image from $debian_image and this machine's Node $(node --version)"
  docker build --quiet --network none -t "$node_image" -f - "$context" >/dev/null <<'DOCKERFILE'
FROM p11kms-local/debian:bookworm-slim
COPY usr/ /usr/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
CMD ["node"]
DOCKERFILE
fi
