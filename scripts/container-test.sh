#!/usr/bin/env bash
# shellcheck disable=SC2016  # check "..." eval '...': expanded when the check runs
# Container test (docs/container.md): builds Passerelle's images with podman and checks,
# on this machine, what issue 14 asks of them:
#   1. the images: FROM scratch (no shell), non-root user, HEALTHCHECK (`passerelle
#      health`), STOPSIGNAL SIGTERM, size at most 120 MB; libxmlsec1 works in them
#      (a VIHF signed and verified in the image, nothing loaded beyond `ldd`'s list);
#   2. `passerelle check` on a mounted sandbox configuration, read-only root filesystem:
#      exit 0 (and exit 1 on a broken configuration);
#   3. the compose stack (deploy/compose: proxy + mock DMP + mock INSi, sandbox PKI)
#      answers the sandbox's INSi sample, a TD2.1 submission and the TD3.1 query; the
#      HEALTHCHECK passes; the audit trail is written on its volume;
#   4. the Grafana dashboard uses only exported metrics and its queries run on a real
#      Prometheus scraping the stack with deploy/compose/prometheus.yml (+ alert rules);
#   5. SIGTERM (podman stop) drains: /readyz 503, the request in flight is answered,
#      exit code 0;
# and, besides: the proxy alone with no writable path but the audit volume, SIGHUP reload,
# the audit `instance` set by the compose host name, the mocks stop on SIGTERM.
# Prints PASS/FAIL per check and a summary; exits 1 on any failure.
#
# On a fresh Debian 12 machine with Rust, as root (rootful podman; the sandbox is given
# to the image's uid): installs podman, runc, mmdebstrap, podman-compose and the build
# packages, imports a local Debian base image when no registry is reachable, builds the
# binaries on the host and the images from them. Measured here (2 cores), once the
# release binaries are built: about 1 min, 2.5 min without the base image and layers.
#
# Settings: PASSERELLE_BASE_IMAGE (default localhost/passerelle-base:bookworm-slim, made with
# mmdebstrap when missing; docker.io/library/debian:bookworm-slim where a registry is
# reachable), PASSERELLE_SPEC (the DMP/INSi specification folder, default ../shared/spec),
# PASSERELLE_TEST_PORT_BASE (host ports BASE+8080, +9090, +9543, +9544, +9099 on
# 127.0.0.1; default 20000, away from scripts/sandbox.sh; they must be free), KEEP=1 to
# leave the stack running and the work folder in place.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then
  echo "container-test: run as root (rootful podman, and the sandbox is chowned to the image's uid 10001)" >&2
  exit 2
fi

base_image=${PASSERELLE_BASE_IMAGE:-localhost/passerelle-base:bookworm-slim}
image=localhost/passerelle:test
mocks_image=localhost/passerelle-mocks:test
debian_image=localhost/passerelle-debian:test
project=passerelle-test
spec=${PASSERELLE_SPEC:-$root/../shared/spec}
ports=${PASSERELLE_TEST_PORT_BASE:-20000}
http_port=$((ports + 8080)) admin_port=$((ports + 9090))
dmp_admin_port=$((ports + 9543)) insi_admin_port=$((ports + 9544)) prom_port=$((ports + 9099))
if [ ! -d "$spec/dmp/wsdl" ] || [ ! -d "$spec/insi/xsd" ]; then
  echo "container-test: the mocks need the DMP annex and INSi XSDs in $spec (dmp/wsdl, insi/xsd); set PASSERELLE_SPEC" >&2
  exit 2
fi
work=$(mktemp -d /tmp/passerelle-container-test.XXXXXX)
chmod 0755 "$work"
log=$work/log
mkdir -p "$log"

# podman as containers.md says: runc and explicit limits, on every build and run; the
# same for podman-compose through a containers.conf of ours (the host's stays untouched).
export CONTAINERS_CONF=$root/deploy/compose/containers.conf
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
podman() { command podman --runtime runc "$@"; }

results=()
notes=()
failures=0
pass() { results+=("PASS  $*"); echo "PASS  $*"; }
fail() { results+=("FAIL  $*"); echo "FAIL  $*"; failures=$((failures + 1)); }
check() { # description command...: PASS when the command succeeds
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
step() { printf '\n== %s\n' "$*"; }

compose_env() {
  env PASSERELLE_SANDBOX="$work/sandbox" PASSERELLE_SPEC="$spec" \
    PASSERELLE_IMAGE="$image" PASSERELLE_MOCKS_IMAGE="$mocks_image" PASSERELLE_BIND=127.0.0.1 \
    PASSERELLE_PORT=$http_port PASSERELLE_ADMIN_PORT=$admin_port \
    MOCK_DMP_ADMIN_PORT=$dmp_admin_port MOCK_INSI_ADMIN_PORT=$insi_admin_port \
    podman-compose -p "$project" -f "$root/deploy/compose/compose.yaml" "$@"
}
prometheus_pid=
finish() {
  local rc=$?
  [ -z "$prometheus_pid" ] || kill "$prometheus_pid" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ] && command -v podman-compose >/dev/null; then
    compose_env down -t 45 >>"$log/compose-down.log" 2>&1 || true
    command podman volume rm "${project}_audit" >/dev/null 2>&1 || true
    command podman network rm "${project}_default" >/dev/null 2>&1 || true
  fi
  local elapsed=$(($(date +%s) - started))
  printf '\n== Summary (%d min %02d s; work folder and logs: %s, removed on success unless KEEP=1)\n' \
    $((elapsed / 60)) $((elapsed % 60)) "$work"
  printf '%s\n' "${results[@]}"
  [ -z "${sizes:-}" ] || printf '%s\n' "$sizes"
  [ ${#notes[@]} -eq 0 ] || printf '%s\n' "${notes[@]}"
  if [ "$failures" -eq 0 ] && [ "$rc" -eq 0 ]; then
    [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
    echo "container-test: PASS (${#results[@]} checks)"
  else
    [ "$rc" -eq 0 ] || echo "container-test: stopped early (exit $rc), see above"
    echo "container-test: FAIL ($failures of ${#results[@]} checks failed)"
    exit 1
  fi
}
trap finish EXIT

step "Tools: podman, runc, mmdebstrap, podman-compose, build packages"
need=()
for p in podman runc mmdebstrap podman-compose curl python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >"$log/apt.log"
fi
scripts/install-deps.sh   # build packages, and prometheus/promtool for step 4
podman --version

step "Base image $base_image"
if command podman image exists "$base_image"; then
  echo "present"
elif [ "$base_image" = localhost/passerelle-base:bookworm-slim ]; then
  # No registry here: Debian bookworm from the machine's package mirror, shaped like the
  # public bookworm-slim (merged /usr without the usrmerge package, no docs, man pages
  # or locales), with the security updates.
  sources=/etc/apt/sources.list.d/debian.sources
  mirror=$(awk '/^URIs:/{print $2; exit}' "$sources" 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  security=$(awk '/^URIs:/{u=$2} /^Suites:.*-security/{print u; exit}' "$sources" 2>/dev/null || true)
  security=${security:-${mirror%/debian}/debian-security}
  mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$work/base.tar" "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main" >"$log/mmdebstrap.log" 2>&1
  command podman import "$work/base.tar" "$base_image" >/dev/null
  rm -f "$work/base.tar"
  echo "imported from $mirror"
else
  podman pull "$base_image"
fi

step "Binaries, built on the host"
nice -n 10 cargo build --release --quiet -p passerelle-proxy -p passerelle-mocks -p passerelle-certs-test
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/release
# A build context of the three binaries only (stripped: 2.4 MB less), whatever the
# target folder; the Containerfile's *-host targets copy them from target/release.
mkdir -p "$work/context/target/release"
for b in passerelle mock-dmp mock-insi; do
  install -m 0755 "$bin/$b" "$work/context/target/release/$b"
  strip "$work/context/target/release/$b"
done
ls -l "$work/context/target/release"

step "Images (podman build --target passerelle-host / mocks-host: the host's binaries)"
previous=$(command podman image inspect --format '{{.Id}}' "$image" "$mocks_image" 2>/dev/null || true)
dangling_before=$(command podman images -q --no-trunc --filter dangling=true)
# The `debian` stage (apt-get install + the collector) keeps a name, so that its cache
# survives the clean-up of this run's other stages below.
for t in debian:"$debian_image" passerelle-host:"$image" mocks-host:"$mocks_image"; do
  podman build --format docker "${limits[@]}" --network=host --build-arg BASE="$base_image" \
    --target "${t%%:*}" -t "${t#*:}" -f "$root/Containerfile" "$work/context" \
    >"$log/build-${t%%:*}.log" 2>&1 || { tail -20 "$log/build-${t%%:*}.log"; exit 1; }
  echo "built ${t#*:}"
done
# The previous run's images, now untagged, go (not when a build gave the same image),
# and so do this run's stage images (the collectors with their /rootfs, ~70 MB each).
current=$(command podman image inspect --format '{{.Id}}' "$image" "$mocks_image")
for id in $previous; do
  grep -q "$id" <<<"$current" || command podman rmi "$id" >/dev/null 2>&1 || true
done
for id in $(command podman images -q --no-trunc --filter dangling=true); do
  grep -q "$id" <<<"$dangling_before" || command podman rmi "$id" >/dev/null 2>&1 || true
done
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }
size=$(command podman image inspect --format '{{.Size}}' "$image")
mocks_size=$(command podman image inspect --format '{{.Size}}' "$mocks_image")
base_size=$(command podman image inspect --format '{{.Size}}' "$base_image")
compressed=$(command podman save "$image" 2>/dev/null | gzip -6 | wc -c)
sizes="image sizes: passerelle $(mb "$size") MB (gzip'd for transfer $(mb "$compressed") MB), mocks $(mb "$mocks_size") MB, base $(mb "$base_size") MB"
echo "$sizes"
config() { command podman image inspect --format "$1" "$image"; }
check "image runs as uid 10001, not root (User=$(config '{{.Config.User}}'))" \
  test "$(config '{{.Config.User}}')" = 10001:10001
check "image STOPSIGNAL is SIGTERM" test "$(config '{{.Config.StopSignal}}')" = SIGTERM
check "image HEALTHCHECK is 'passerelle health' (\$PASSERELLE_HEALTHZ_URL: $(config '{{range .Config.Env}}{{println .}}{{end}}' | sed -n 's/^PASSERELLE_HEALTHZ_URL=//p'))" \
  grep -q '"Test":\["CMD","passerelle","health"\]' <<<"$(config '{{json .Config.Healthcheck}}')"
check "image entrypoint is passerelle, command 'run --config /etc/passerelle/passerelle.toml'" \
  test "$(config '{{json .Config.Entrypoint}} {{json .Config.Cmd}}')" = \
  '["passerelle"] ["run","--config","/etc/passerelle/passerelle.toml","--log-format","json"]'
# Issue 14: at most 120 MB. FROM scratch with Debian's libraries: about 57 MB, of which
# libicudata (libxml2's ICU) is 31 MB (docs/container.md, "Image size").
check "image size $(mb "$size") MB is at most the issue's 120 MB" test "$size" -le 120000000
check "mocks image STOPSIGNAL is SIGTERM" \
  test "$(command podman image inspect --format '{{.Config.StopSignal}}' "$mocks_image")" = SIGTERM
# The whole file list: no shell, no package manager, nothing but what collect-rootfs took.
files() { # image: its file list
  local c
  c=$(command podman create "$1") && command podman export "$c" | tar -tf - && command podman rm "$c" >/dev/null
}
files "$image" >"$log/image-files.txt" 2>>"$log/image-files.err" || true
packages=$(sed -n 's,^var/lib/dpkg/status.d/\(.\),\1,p' "$log/image-files.txt" | tr '\n' ' ')
check "image is FROM scratch + collected files: $(grep -vc '/$' "$log/image-files.txt") files, no shell, busybox, dpkg or apt; Debian packages recorded: $packages" \
  eval 'grep -qx "usr/local/bin/passerelle" "$log/image-files.txt" && ! grep -Eq "(^|/)(sh|bash|dash|busybox|dpkg|apt)$" "$log/image-files.txt" && grep -qw libxmlsec1-openssl <<<"$packages"'

step "Sandbox for containers (deploy/compose/make-sandbox.sh)"
PASSERELLE_CERTS_TEST=$bin/passerelle-certs-test deploy/compose/make-sandbox.sh "$work/sandbox" >"$log/make-sandbox.log" 2>&1 \
  || { cat "$log/make-sandbox.log"; exit 1; }
tail -1 "$log/make-sandbox.log"
install -d -o 10001 -g 10001 -m 0700 "$work/audit"

step "passerelle check, one-off, read-only root filesystem, no network"
run_check() { # extra podman options...
  podman run --rm "${limits[@]}" --read-only --read-only-tmpfs=false --network none --no-healthcheck \
    -v "$work/sandbox:/etc/passerelle:ro" -v "$work/audit:/var/lib/passerelle/audit" "$@" \
    "$image" check --config /etc/passerelle/passerelle.toml
}
rc=0
run_check >"$log/check.log" 2>&1 || rc=$?
sed -n '1,4p' "$log/check.log"
check "passerelle check on the mounted sandbox configuration: exit 0 (got $rc)" test "$rc" = 0
cp "$work/sandbox/passerelle.toml" "$work/broken.toml"
printf '\n[listener.bogus]\nkey = 1\n' >>"$work/broken.toml"
chmod 0644 "$work/broken.toml"
rc=0
run_check -v "$work/broken.toml:/etc/passerelle/passerelle.toml:ro" >"$log/check-broken.log" 2>&1 || rc=$?
check "passerelle check on a broken configuration: exit 1 (got $rc)" test "$rc" = 1

step "libxmlsec1 in the image: a VIHF signed and verified by the image's passerelle"
# `vihf sign` signs with the tenant's ORG SIGN key (OpenSSL); `verify` checks it with
# libxmlsec1 and its OpenSSL engine. LD_DEBUG=files lists every library the loader
# maps: those `ldd` named at start, and any later dlopen ("dynamically loaded by").
run_tool() { # passerelle arguments...
  podman run --rm "${limits[@]}" --read-only --read-only-tmpfs=false --network none --no-healthcheck \
    -v "$work/sandbox:/etc/passerelle:ro" -v "$work/audit:/var/lib/passerelle/audit" -v "$work/xmlsec:/w:ro" \
    "$@"
}
mkdir -p "$work/xmlsec"
cp examples/vihf-context.json "$work/xmlsec/"
chmod -R a+rX "$work/xmlsec"
rc=0
run_tool "$image" vihf sign --config /etc/passerelle/passerelle.toml --tenant ch-test-a \
  --context /w/vihf-context.json >"$work/xmlsec/vihf.xml" 2>"$log/vihf-sign.log" || rc=$?
sed 's/899900063480/899900063481/' "$work/xmlsec/vihf.xml" >"$work/xmlsec/tampered.xml"
chmod a+r "$work/xmlsec"/*.xml
trust=(--trust /etc/passerelle/ca/root.pem --untrusted /etc/passerelle/ca/org-intermediate.pem)
verified=$(run_tool -e LD_DEBUG=files "$image" verify "${trust[@]}" /w/vihf.xml 2>"$log/verify-ld-debug.log" || true)
echo "$verified"
check "a VIHF signed in the image (exit $rc) verifies with the image's libxmlsec1: ${verified:0:60}" \
  eval 'test "$rc" = 0 && grep -q "^valid: VIHF" <<<"$verified"'
tampered=$(run_tool "$image" verify "${trust[@]}" /w/tampered.xml 2>/dev/null || true)
check "the same VIHF altered is refused by libxmlsec1: ${tampered:0:90}" \
  eval 'grep -q "^invalid: .*libxmlsec1" <<<"$tampered"'
loaded=$(sed -n 's/.*file=\([^ ]*\) .*/\1/p' "$log/verify-ld-debug.log" | sort -u | tr '\n' ' ')
check "nothing loaded at run time beyond ldd's list (no dlopen, nothing missing): $loaded" \
  eval '! grep -Eq "dynamically loaded by|cannot open" "$log/verify-ld-debug.log" && grep -q "libxmlsec1-openssl" <<<"$loaded"'

step "passerelle run alone: read-only root filesystem without any tmpfs (as Docker's --read-only)"
rc=0
solo=$(podman run -d "${limits[@]}" --read-only --read-only-tmpfs=false --network none \
  -v "$work/sandbox:/etc/passerelle:ro" -v "$work/audit:/var/lib/passerelle/audit" "$image" 2>>"$log/solo.log") || rc=$?
healthy=no
for _ in $(seq 50); do
  [ "$rc" = 0 ] || break
  if command podman healthcheck run "$solo" >/dev/null 2>&1; then healthy=yes; break; fi
  sleep 0.2
done
check "passerelle run serves (HEALTHCHECK healthy) with nothing writable but the audit volume" test "$healthy" = yes
if [ "$rc" = 0 ]; then
  command podman stop -t 40 "$solo" >/dev/null 2>&1 || true
  solo_exit=$(command podman inspect --format '{{.State.ExitCode}}' "$solo")
  command podman logs "$solo" >"$log/solo.log" 2>&1 || true
  command podman rm -f "$solo" >/dev/null 2>&1 || true
  check "podman stop with the image's STOPSIGNAL: exit $solo_exit" test "$solo_exit" = 0
fi

step "Compose stack: passerelle + mock-dmp + mock-insi (podman-compose, read-only root filesystems)"
for p in $http_port $admin_port $dmp_admin_port $insi_admin_port $prom_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "container-test: port 127.0.0.1:$p is in use; choose other ports with PASSERELLE_TEST_PORT_BASE" >&2
    exit 1
  fi
done
compose_env down -t 5 >"$log/compose-down-before.log" 2>&1 || true
command podman volume rm "${project}_audit" >/dev/null 2>&1 || true
compose_env up -d --no-build passerelle mock-dmp mock-insi >"$log/compose-up.log" 2>&1 \
  || { tail -20 "$log/compose-up.log"; exit 1; }
ctr=$(command podman ps -a -q --filter "label=com.docker.compose.project=$project" \
  --filter label=com.docker.compose.service=passerelle)
admin=http://127.0.0.1:$admin_port
proxy=http://127.0.0.1:$http_port
wait_for() { # url: up to 60 s
  for _ in $(seq 300); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.2
  done
  return 1
}
up=ok
running=$(for s in passerelle mock-dmp mock-insi; do
  command podman ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$s"
done | grep -c . || true)
[ "$running" = 3 ] || up="$running of 3 containers running"
for url in "http://127.0.0.1:$dmp_admin_port/health" "http://127.0.0.1:$insi_admin_port/health" \
  "$admin/healthz" "$admin/readyz"; do
  [ "$up" = ok ] || break
  wait_for "$url" || up="not answering: $url"
done
check "stack up: 3 containers running; mocks' /health, passerelle /healthz and /readyz answer ($up)" test "$up" = ok
if [ "$up" != ok ]; then
  tail -5 "$log/compose-up.log"
  [ -z "$ctr" ] || command podman logs "$ctr" 2>&1 | tail -20
  exit 1
fi
command podman ps --filter "label=com.docker.compose.project=$project" --format '{{.Names}}  {{.Status}}  {{.Image}}'

# The sandbox's requests (scripts/sandbox.sh): plain HTTP, bearer token, tenant header.
sih() { curl -sS -H 'Authorization: Bearer sandbox-token' -H 'X-Passerelle-Tenant: ch-test-a' "$@"; }
soap=(-H 'Content-Type: application/soap+xml; charset=utf-8')
vihf=(-H 'X-Vihf-Subject-Id: 899900063480' -H 'X-Vihf-Subject-Name: MAX%20LIBRE'
      -H 'X-Vihf-Role: 10^M%C3%A9decin' -H 'X-Vihf-Sector: SA01'
      -H 'X-Vihf-Structure: 1690010012'
      -H 'X-Vihf-Patient: 207058575627097^^^%261.2.250.1.213.1.4.10%26ISO^NH')
insi_sample() { # output file
  sih "${soap[@]}" -o "$1" -w '%{http_code}' --data-binary @examples/insi-rechercher-traits-minimal.xml \
    "$proxy/insi/auto" || true
}
td31_sample() { # output file
  sih "${soap[@]}" "${vihf[@]}" -o "$1" -w '%{http_code}' --data-binary @examples/dmp-find-documents.xml \
    "$proxy/dmp/registry" || true
}

status=$(insi_sample "$work/insi.xml")
check "INSi sample through the stack (POST /insi/auto): HTTP $status, CR 00 and the INS" \
  eval 'test "$status" = 200 && grep -q "<CodeCR>00</CodeCR>" "$work/insi.xml" \
    && grep -q "<NumIdentifiant>2070585756270</NumIdentifiant><Cle>97</Cle>" "$work/insi.xml"'

boundary=container-test-7c1d
{
  printf -- '--%s\r\nContent-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\nContent-ID: <root@sih.example>\r\n\r\n' $boundary
  cat examples/dmp-submit-td21.xml
  printf '\r\n--%s\r\nContent-Type: text/xml\r\nContent-ID: <document01@sih.example>\r\n\r\n' $boundary
  cat examples/td21-document01.xml
  printf '\r\n--%s\r\nContent-Type: text/plain\r\nContent-ID: <document02@sih.example>\r\n\r\n' $boundary
  cat examples/td21-document02.txt
  printf '\r\n--%s--\r\n' $boundary
} >"$work/td21.body"
status=$(sih "${vihf[@]}" -o "$work/td21.xml" -w '%{http_code}' --data-binary "@$work/td21.body" "$proxy/dmp/repository" \
  -H "Content-Type: multipart/related; type=\"application/xop+xml\"; boundary=\"$boundary\"; start=\"<root@sih.example>\"; start-info=\"application/soap+xml\"" || true)
check "DMP TD2.1 submission (VIHF + lot signed in the container): HTTP $status, status Success" \
  eval 'test "$status" = 200 && grep -q "ResponseStatusType:Success" "$work/td21.xml"'

status=$(td31_sample "$work/td31.xml")
found=$(grep -o 'value="1\.2\.250\.1\.999\.2026\.1122\.[0-9]*"' "$work/td31.xml" | sort -u | wc -l || true)
check "DMP TD3.1 sample (POST /dmp/registry): HTTP $status, Success, the $found submitted documents listed" \
  eval 'test "$status" = 200 && grep -q "ResponseStatusType:Success" "$work/td31.xml" && test "$found" -ge 2'

status=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong-token' "${soap[@]}" \
  --data-binary @examples/insi-rechercher-traits-minimal.xml "$proxy/insi/auto" || true)
check "a wrong bearer token is refused: HTTP $status" test "$status" = 401

check "HEALTHCHECK (podman healthcheck run): healthy" eval 'command podman healthcheck run "$ctr" >"$log/healthcheck.log" 2>&1'

audit_dir=$(command podman volume inspect --format '{{.Mountpoint}}' "${project}_audit")
audit_lines=$(cat "$audit_dir"/*.jsonl 2>/dev/null | wc -l)
check "audit trail on its volume: $audit_lines lines, folder 0700 owned by 10001" \
  eval 'test "$audit_lines" -ge 3 && test "$(stat -c %u:%a "$audit_dir")" = 10001:700'
instances=$(cat "$audit_dir"/*.jsonl 2>/dev/null | python3 -c 'import json,sys; print(" ".join(sorted({json.loads(l).get("instance", "-") for l in sys.stdin if l.strip()})))')
check "audit instance is the compose host name: $instances" test "$instances" = passerelle

command podman kill --signal HUP "$ctr" >/dev/null
reloads=none
for _ in $(seq 25); do
  reloads=$(curl -s "$admin/metrics" | awk '$1 == "passerelle_reloads_total{result=\"success\"}" {print $2}')
  [ "${reloads:-0}" -lt 1 ] || break
  sleep 0.2
done
check "SIGHUP (podman kill --signal HUP) reloads the configuration: reloads_total{result=\"success\"} ${reloads:-none}, still running" \
  eval 'test "${reloads:-0}" -ge 1 && test "$(command podman inspect --format "{{.State.Running}}" "$ctr")" = true'

step "Dashboard and Prometheus (deploy/grafana/passerelle.json, deploy/compose/prometheus.yml)"
curl -sf "$admin/metrics" >"$work/metrics.txt"
mkdir -p "$work/prometheus"
sed -e "s/\"passerelle:9090\"/\"127.0.0.1:$admin_port\"/" -e 's/scrape_interval: 15s/scrape_interval: 1s/' \
  deploy/compose/prometheus.yml >"$work/prometheus/prometheus.yml"
cp deploy/prometheus/alerts.yml "$work/prometheus/alerts.yml"
check "promtool check config: the compose Prometheus configuration and its alert rules" \
  eval 'promtool check config "$work/prometheus/prometheus.yml" >"$log/promtool.log" 2>&1'
prometheus --config.file="$work/prometheus/prometheus.yml" --storage.tsdb.path="$work/prometheus/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$log/prometheus.log" 2>&1 &
prometheus_pid=$!
prom=http://127.0.0.1:$prom_port
scraped=no
for _ in $(seq 60); do
  if curl -sf "$prom/api/v1/query?query=up%7Bjob%3D%22passerelle%22%7D%3D%3D1" | grep -q '"value"'; then
    scraped=yes
    break
  fi
  sleep 0.5
done
check "Prometheus (host binary, compose prometheus.yml) scrapes the container's admin port" test "$scraped" = yes
# Traffic while Prometheus scrapes, so rates and quantiles have values.
for _ in 1 2 3; do
  insi_sample /dev/null >/dev/null
  td31_sample /dev/null >/dev/null
  sleep 1
done
sleep 2
check "dashboard: valid, only exported metrics, every query accepted by Prometheus, key panels show data" \
  eval 'python3 deploy/compose/check-dashboard.py --metrics "$work/metrics.txt" --prometheus "$prom" | tee "$log/dashboard.log"'
kill "$prometheus_pid" 2>/dev/null || true
prometheus_pid=

step "SIGTERM (podman stop): drain, the request in flight answered, exit 0"
curl -sf -X PUT --data '{"*": {"latency_ms": 3000}}' "http://127.0.0.1:$insi_admin_port/faults" >/dev/null
audit_before=$(cat "$audit_dir"/*.jsonl 2>/dev/null | wc -l)
insi_sample "$work/inflight.xml" >"$work/inflight.status" &
inflight=$!
sleep 1
in_flight=$(curl -s "$admin/metrics" | awk '$1 == "passerelle_in_flight_requests" {print $2}')
stop_start=$(date +%s)
command podman stop -t 40 "$ctr" >"$log/stop.log" 2>&1 &
stopper=$!
readyz=none
for _ in $(seq 40); do
  readyz=$(curl -s -o "$work/readyz.txt" -w '%{http_code}' "$admin/readyz" || true)
  [ "$readyz" != 503 ] || break
  sleep 0.05
done
check "one request in flight (mock INSi answers after 3 s) when SIGTERM is sent: passerelle_in_flight_requests $in_flight" \
  test "$in_flight" = 1
check "after SIGTERM /readyz answers 503 draining while a request is in flight (got $readyz: $(head -c 40 "$work/readyz.txt" 2>/dev/null))" \
  eval 'test "$readyz" = 503 && grep -q draining "$work/readyz.txt"'
wait "$inflight" || true
status=$(cat "$work/inflight.status")
check "the request in flight at SIGTERM is answered: HTTP $status, CR 00" \
  eval 'test "$status" = 200 && grep -q "<CodeCR>00</CodeCR>" "$work/inflight.xml"'
wait "$stopper" || true
audit_after=$(cat "$audit_dir"/*.jsonl 2>/dev/null | wc -l)
check "its audit line is written ($audit_before lines before, $audit_after after)" \
  test "$audit_after" -eq $((audit_before + 1))
stop_time=$(($(date +%s) - stop_start))
exit_code=$(command podman inspect --format '{{.State.ExitCode}}' "$ctr")
check "container exits $exit_code after draining, in ${stop_time} s (no SIGKILL)" \
  eval 'test "$exit_code" = 0 && test "$stop_time" -lt 40'
command podman logs "$ctr" >"$log/passerelle.log" 2>&1 || true
# After 'stopped', only the audit trail's chain head may follow (logged at shutdown).
check "the log ends with 'stopped' (then the audit chain head only; JSON lines on stderr)" \
  awk '/"message":"stopped"/ { found = NR; other = 0; next }
       found && !/"message":"audit chain head/ { other = 1 }
       END { exit !(found && !other) }' "$log/passerelle.log"

step "The mocks stop on SIGTERM (podman stop with compose's stop_signal)"
for service in mock-dmp mock-insi; do
  mock=$(command podman ps -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$service")
  stop_start=$(date +%s)
  command podman stop -t 20 "$mock" >>"$log/stop-mocks.log" 2>&1 || true
  stop_time=$(($(date +%s) - stop_start))
  mock_exit=$(command podman inspect --format '{{.State.ExitCode}} {{.Config.StopSignal}}' "$mock")
  check "$service stops on SIGTERM: exit code and stop signal '$mock_exit', in ${stop_time} s (no SIGKILL)" \
    eval 'test "$mock_exit" = "0 15" -o "$mock_exit" = "0 SIGTERM" && test "$stop_time" -lt 10'
done
