#!/usr/bin/env bash
# The sandbox: installs what is missing, builds Passerelle, writes a test PKI shaped like
# IGC-Santé TEST with a ready configuration, checks it, starts the mock DMP, the mock INSi,
# the mock echo service and Passerelle in front of them, and sends sample requests through Passerelle as an
# internal system would. Re-running reuses the PKI (pass --force to regenerate). In a
# terminal everything keeps running until Ctrl-C; otherwise it stops after the samples.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${PASSERELLE_SANDBOX_DIR:-sandbox}

scripts/install-deps.sh
cargo build --release --quiet -p passerelle-proxy -p passerelle-certs-test -p passerelle-mocks
# Where cargo put them: CARGO_TARGET_DIR (or CARGO_BUILD_TARGET_DIR) when set, relative
# to the repository root where cargo ran, else ./target.
bin=${CARGO_TARGET_DIR:-${CARGO_BUILD_TARGET_DIR:-target}}/release
$bin/passerelle-certs-test --out "$dir" "$@"
echo
$bin/passerelle check --config "$dir/passerelle.toml"

pids=()
cleanup() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
$bin/mock-dmp --pki "$dir" --listen 127.0.0.1:9443 --admin 127.0.0.1:9543 \
  --spec ../shared/spec/dmp & pids+=($!)
$bin/mock-insi --pki "$dir" --listen 127.0.0.1:9444 --admin 127.0.0.1:9544 \
  --xsd ../shared/spec/insi/xsd & pids+=($!)
$bin/mock-echo --pki "$dir" --listen 127.0.0.1:9445 --admin 127.0.0.1:9545 & pids+=($!)
$bin/passerelle run --config "$dir/passerelle.toml" 2>"$dir/passerelle.log" & pids+=($!)
for url in http://127.0.0.1:9543/health http://127.0.0.1:9544/health http://127.0.0.1:9545/health \
  http://127.0.0.1:9090/healthz; do
  for _ in $(seq 100); do
    curl -sf "$url" >/dev/null && break
    sleep 0.1
  done
  curl -sf "$url" >/dev/null || { echo "not answering: $url (port already in use?)" >&2; exit 1; }
done

# An internal system (SIH) talks plain HTTP to Passerelle on :8080 with its bearer token
# and the tenant it acts for; Passerelle signs and opens the mutual-TLS sessions.
proxy=http://127.0.0.1:8080
sih() { curl -sS -H 'Authorization: Bearer sandbox-token' -H 'X-Passerelle-Tenant: ch-test-a' "$@"; }
soap=(-H 'Content-Type: application/soap+xml; charset=utf-8')
# Who acts, where, for which patient (values percent-encoded UTF-8): Passerelle builds and
# signs the VIHF. The structure is tenant A's first geographic establishment (FINESS EG
# 690010012, $dir/pki.json tenants[0].geographic_structure_ids[0]), as in the TD2.1
# example's authorInstitution: the DMP wants the EG that acts, not the legal entity.
vihf=(-H 'X-Vihf-Subject-Id: 899900063480' -H 'X-Vihf-Subject-Name: MAX%20LIBRE'
      -H 'X-Vihf-Role: 10^M%C3%A9decin' -H 'X-Vihf-Sector: SA01'
      -H 'X-Vihf-Structure: 1690010012'
      -H 'X-Vihf-Patient: 207058575627097^^^%261.2.250.1.213.1.4.10%26ISO^NH')

echo
echo "== INSi search by traits, contexts left to Passerelle: POST $proxy/insi/auto (INSI-AUTO certificate)"
sih "${soap[@]}" --data-binary @examples/insi-rechercher-traits-minimal.xml $proxy/insi/auto \
  | grep -o '<CR>.*</CR>\|<INSACTIF>.*</INSACTIF>' || true
echo "== the same, complete request forwarded unchanged: POST $proxy/insi/manu (INSI-MANU certificate)"
sih "${soap[@]}" --data-binary @examples/insi-rechercher-traits.xml $proxy/insi/manu \
  | grep -o '<CR>.*</CR>' || true

echo
echo "== INSi JSON API, search by traits: POST $proxy/api/insi/search (examples/insi-search.json)"
echo "   the first first name is wrong: all first names, then ANNE alone find nobody, CLAIRE alone finds her"
sih -H 'Content-Type: application/json' --data-binary @examples/insi-search.json $proxy/api/insi/search; echo
echo "== INSi JSON API, carte Vitale: POST $proxy/api/insi/vitale (examples/insi-vitale.json)"
sih -H 'Content-Type: application/json' --data-binary @examples/insi-vitale.json $proxy/api/insi/vitale \
  | grep -o '"result":"[a-z_]*"\|"ins":{[^}]*}' || true
echo "== the same with a wrong key: 400, the field named"
sed 's/"97"/"12"/' examples/insi-vitale.json \
  | sih -H 'Content-Type: application/json' --data-binary @- $proxy/api/insi/vitale; echo

echo
echo "== Another service over mutual TLS: POST $proxy/svc/echo/messages (tenant A's org_auth certificate)"
sih -H 'Content-Type: application/json' --data-binary @examples/svc-message.json $proxy/svc/echo/messages \
  | grep -o '"subject":"[^"]*"\|"method":"[A-Z]*"\|"path":"[^"]*"' || true
echo "== a path outside the service's path_prefixes: refused, nothing sent"
sih -X POST $proxy/svc/echo/admin; echo

echo
echo "== DMP TD2.1, two documents over MTOM: POST $proxy/dmp/repository (VIHF + lot signed by Passerelle)"
boundary=sandbox-boundary-7c1d
body=$(mktemp)
{
  printf -- '--%s\r\nContent-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\nContent-ID: <root@sih.example>\r\n\r\n' $boundary
  cat examples/dmp-submit-td21.xml
  printf '\r\n--%s\r\nContent-Type: text/xml\r\nContent-ID: <document01@sih.example>\r\n\r\n' $boundary
  cat examples/td21-document01.xml
  printf '\r\n--%s\r\nContent-Type: text/plain\r\nContent-ID: <document02@sih.example>\r\n\r\n' $boundary
  cat examples/td21-document02.txt
  printf '\r\n--%s--\r\n' $boundary
} > "$body"
sih "${vihf[@]}" --data-binary "@$body" $proxy/dmp/repository \
  -H "Content-Type: multipart/related; type=\"application/xop+xml\"; boundary=\"$boundary\"; start=\"<root@sih.example>\"; start-info=\"application/soap+xml\"" \
  | grep -o '<rs:RegistryResponse[^>]*>\|<soap:Text[^<]*' || true
rm -f "$body"

echo "== DMP TD3.1, the patient's documents: POST $proxy/dmp/registry"
sih "${soap[@]}" "${vihf[@]}" --data-binary @examples/dmp-find-documents.xml $proxy/dmp/registry \
  | grep -o 'value="1\.2\.250\.1\.999\.2026\.1122\.[0-9]*"' | sort -u || true
echo "== DMP TD3.2, document 2's bytes back over MTOM: POST $proxy/dmp/repository"
sih "${soap[@]}" "${vihf[@]}" --data-binary @examples/dmp-retrieve-document.xml $proxy/dmp/repository \
  | grep -a 'Compte rendu' || true

echo
echo "== Passerelle's upstream pools (admin :9090/pools): one TLS handshake per pool"
curl -s http://127.0.0.1:9090/pools | tr '}' '\n' | grep -v '"requests":0' | sed 's/^[],[]*//' | grep . || true
echo "== The audit trail ($dir/audit/passerelle-audit.jsonl), last exchange: who, for which patient"
tail -n 1 "$dir/audit/passerelle-audit.jsonl" || true
echo "== What the mocks saw (admin ports): each request with the tenant's own certificate"
curl -s http://127.0.0.1:9543/stats | head -c 400; echo
curl -s http://127.0.0.1:9544/stats | head -c 400; echo
curl -s http://127.0.0.1:9545/stats | head -c 400; echo

cat <<TXT

Sandbox ready in $dir/:
  configuration   $dir/passerelle.toml   (passerelle check --config ...)
  Passerelle log  $dir/passerelle.log    (one line per request, no patient data)
  audit trail     $dir/audit/passerelle-audit.jsonl   (one line per upstream exchange)
  Passerelle      http://127.0.0.1:8080  (POST /dmp/<service>, /insi/auto, /insi/manu, /api/insi/search,
                                          /api/insi/vitale, /svc/echo/...; token sandbox-token)
                  API description http://127.0.0.1:8080/api/openapi.json
                  admin http://127.0.0.1:9090/healthz, /readyz, /metrics, /pools
  tenants         $dir/tenants/<id>/{dmp-auth,dmp-sign,insi-auto,insi-manu,org-auth}.{cert.pem,chain.pem,key.pem,p12}
  mock DMP        https://localhost:9443/si-dmp-server/v2/services/   admin http://127.0.0.1:9543
  mock INSi       https://localhost:9444/lps                          admin http://127.0.0.1:9544
  mock echo       https://localhost:9445/echo/                        admin http://127.0.0.1:9545

Try:  curl -H 'Authorization: Bearer sandbox-token' -H 'X-Passerelle-Tenant: ch-test-a' \\
        -H 'Content-Type: application/soap+xml' --data-binary @examples/insi-rechercher-traits-minimal.xml \\
        http://127.0.0.1:8080/insi/auto
      curl -H 'Authorization: Bearer sandbox-token' -H 'X-Passerelle-Tenant: ch-test-b' \\
        -H 'Content-Type: application/json' --data-binary @examples/insi-search.json \\
        http://127.0.0.1:8080/api/insi/search
TXT
if [ -t 0 ]; then
  echo "Passerelle and the mocks keep running; Ctrl-C to stop."
  wait
fi
