#!/usr/bin/env bash
# Writes the test PKI and a Passerelle configuration fit for containers into one folder,
# the one the compose stack mounts at /etc/passerelle (docs/container.md):
#
#   deploy/compose/make-sandbox.sh [DIR] [passerelle-certs-test options, e.g. --force]
#
# DIR defaults to sandbox/container (at the repository root, git-ignored). The PKI is
# the sandbox's (passerelle-certs-test) with the mocks' server certificate also valid
# for the names mock-dmp and mock-insi; the configuration is the sandbox's with:
#   - the listeners on every interface (0.0.0.0:8080, admin 0.0.0.0:9090), as the
#     container's ports are published on the host's loopback only;
#   - the DMP and INSi at https://mock-dmp:9443 and https://mock-insi:9444;
#   - the sample client ("sandbox-token") allowed from private addresses: connections
#     through a published port arrive from the container network's gateway;
#   - the audit trail on the audit volume, /var/lib/passerelle/audit.
# Then the folder is given to the image's user (uid/gid 10001, PASSERELLE_UID/GID):
# Passerelle refuses keys that group or others may read, so the container's user must
# own them. Needs root for that (or the same uid).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$root/sandbox/container}
[ $# -eq 0 ] || shift
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd "$root"   # CARGO_TARGET_DIR is read from here, as scripts/sandbox.sh does
uid=${PASSERELLE_UID:-10001}
gid=${PASSERELLE_GID:-10001}
certs_test=${PASSERELLE_CERTS_TEST:-${CARGO_TARGET_DIR:-${CARGO_BUILD_TARGET_DIR:-target}}/release/passerelle-certs-test}
if [ ! -x "$certs_test" ]; then
  echo "make-sandbox: $certs_test not found: cargo build --release -p passerelle-certs-test" >&2
  exit 1
fi

"$certs_test" --out "$dir" --server-name mock-dmp --server-name mock-insi "$@"

config=$dir/passerelle.toml
# The generated file is the sandbox's (loopback addresses); each line below must be
# found exactly once, so a change of the generator is noticed here, not at run time.
rewrite() { # pattern replacement
  local n
  n=$(grep -c -- "$1" "$config" || true)
  if [ "$n" != 1 ]; then
    echo "make-sandbox: expected one line matching '$1' in $config, found $n" >&2
    exit 1
  fi
  sed -i "s#$1#$2#" "$config"
}
rewrite '^address = "127.0.0.1:8080"$' 'address = "0.0.0.0:8080"'
rewrite '^address = "127.0.0.1:9090"$' 'address = "0.0.0.0:9090"'
rewrite '^base_url = "https://localhost:9443/' 'base_url = "https://mock-dmp:9443/'
rewrite '^url = "https://localhost:9444/lps"$' 'url = "https://mock-insi:9444/lps"'
rewrite '^source_cidrs = \["127.0.0.0/8", "::1/128"\]$' \
  'source_cidrs = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]'
if ! grep -q '^\[audit\]' "$config"; then
  cat >> "$config" <<'TOML'

# Containers: the audit trail on its own volume (the root filesystem is read-only).
[audit]
path = "/var/lib/passerelle/audit/passerelle-audit.jsonl"
TOML
fi

if [ "$(id -u)" -eq 0 ]; then
  chown -R "$uid:$gid" "$dir"
elif [ "$(stat -c %u "$config")" != "$uid" ]; then
  echo "make-sandbox: $dir must belong to uid $uid (the image's user): sudo chown -R $uid:$gid $dir" >&2
fi
echo "container sandbox ready in $dir (mount it at /etc/passerelle)"
