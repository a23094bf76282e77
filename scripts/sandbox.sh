#!/usr/bin/env bash
# The sandbox: installs what is missing, builds Passerelle, writes a test PKI shaped like
# IGC-Santé TEST with a ready configuration, checks it, starts the mock DMP and the mock
# INSi, and sends them sample requests with the sandbox tenant's certificates.
# Re-running reuses the PKI (pass --force to regenerate). In a terminal the mocks keep
# running until Ctrl-C; otherwise they stop after the samples.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${PASSERELLE_SANDBOX_DIR:-sandbox}

scripts/install-deps.sh
cargo build --release --quiet -p passerelle-proxy -p passerelle-certs-test -p passerelle-mocks
bin=target/release
$bin/passerelle-certs-test --out "$dir" "$@"
echo
$bin/passerelle check --config "$dir/passerelle.toml"

pids=()
cleanup() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
$bin/mock-dmp --pki "$dir" --listen 127.0.0.1:9443 --admin 127.0.0.1:9543 & pids+=($!)
$bin/mock-insi --pki "$dir" --listen 127.0.0.1:9444 --admin 127.0.0.1:9544 \
  --xsd ../shared/spec/insi/xsd & pids+=($!)
for admin in 9543 9544; do
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$admin/health" >/dev/null && break
    sleep 0.1
  done
done

tenant="$dir/tenants/ch-test-a"
mtls() { curl -sS --cacert "$dir/ca/root.pem" --cert "$tenant/$1.chain.pem" --key "$tenant/$1.key.pem" \
  -H 'Content-Type: application/soap+xml; charset=utf-8' --data-binary "@$2" "$3"; }

echo
echo "== INSi search by identity traits (INSI-AUTO certificate) -> mock INSi"
mtls insi-auto examples/insi-rechercher-traits.xml https://localhost:9444/lps \
  | grep -o '<CR>.*</CR>\|<INSACTIF>.*</INSACTIF>' || true

echo
echo "== DMP TD3.1 document search: VIHF signed with ORG SIGN, sent with ORG AUTH_CLI -> mock DMP"
vihf=$($bin/passerelle vihf sign --config "$dir/passerelle.toml" --tenant ch-test-a --context examples/vihf-context.json)
shopt -u patsub_replacement 2>/dev/null || true
template=$(cat examples/dmp-find-documents.xml)
request=$(mktemp)
printf '%s' "${template/@VIHF@/$vihf}" > "$request"
mtls dmp-auth "$request" https://localhost:9443/si-dmp-server/v2/services/registry \
  | grep -o '<query:AdhocQueryResponse[^>]*>' || true
rm -f "$request"

echo
echo "== What the mocks saw (admin ports):"
curl -s http://127.0.0.1:9543/stats | head -c 400; echo
curl -s http://127.0.0.1:9544/stats | head -c 400; echo

cat <<TXT

Sandbox ready in $dir/:
  configuration   $dir/passerelle.toml   (passerelle check --config ...)
  tenants         $dir/tenants/<id>/{dmp-auth,dmp-sign,insi-auto,insi-manu}.{cert.pem,chain.pem,key.pem,p12}
  bad fixtures    $dir/bad/
  mock DMP        https://localhost:9443/si-dmp-server/v2/services/   admin http://127.0.0.1:9543
  mock INSi       https://localhost:9444/lps                          admin http://127.0.0.1:9544
TXT
if [ -t 0 ]; then
  echo "The mocks keep running; Ctrl-C to stop."
  wait
fi
