#!/usr/bin/env bash
# The sandbox: installs what is missing, builds Passerelle, writes a test PKI shaped like
# IGC-Santé TEST with a ready configuration, and checks it with `passerelle check`.
# Re-running reuses the PKI (delete the directory, or pass --force, to regenerate).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${PASSERELLE_SANDBOX_DIR:-sandbox}

scripts/install-deps.sh
cargo build --release --quiet -p passerelle-proxy -p passerelle-certs-test
target/release/passerelle-certs-test --out "$dir" "$@"
echo
target/release/passerelle check --config "$dir/passerelle.toml"
cat <<TXT

Sandbox ready in $dir/:
  configuration    $dir/passerelle.toml
  tenants          $dir/tenants/<id>/{dmp-auth,dmp-sign,insi-auto,insi-manu}.{cert.pem,chain.pem,key.pem,p12}
  bad fixtures     $dir/bad/   (try: target/release/passerelle check --config <a copy using one>)
  manifest         $dir/pki.json
TXT
