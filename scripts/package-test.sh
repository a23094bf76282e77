#!/usr/bin/env bash
# The Debian package, tested for real: builds target/debian/passerelle_<version>_<arch>.deb
# with cargo-deb, installs it with apt in the local Debian base container (dependencies
# from the Debian mirror), then, in a container without network:
#   - the passerelle user, its folders and their modes, the installed files;
#   - `passerelle check` on the installed example (refused: only its certificate and CA
#     files are missing), then on the same file filled in with the sandbox test PKI (OK),
#     run as the passerelle user;
#   - `systemd-analyze verify` of the installed unit (and its `security` exposure score);
#   - `passerelle run` as the passerelle user: /healthz, /readyz, the audit folder,
#     SIGHUP reloads, SIGTERM exits 0.
# Prints PASS or FAIL and exits non-zero on any failure. Needs root (podman), like the
# other container tests here (docs/packaging.md; /work/shared/docs/containers.md).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

cargo_deb_version=3.8.0
base=${PASSERELLE_BASE_IMAGE:-localhost/debian:bookworm-slim}
work=target/package-test
image=localhost/passerelle-package-test:latest
podman=(podman --runtime runc)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

fail() { echo "FAIL: $*" >&2; echo "package-test: FAIL ($(($(date +%s) - started))s)"; exit 1; }
step() { echo; echo "== [$(($(date +%s) - started))s] $*"; }

step "tools: podman, runc, mmdebstrap, dpkg-dev; cargo-deb $cargo_deb_version"
scripts/install-deps.sh
missing=()
for p in podman runc mmdebstrap dpkg-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$(cargo deb --version 2>/dev/null | awk '{print $NF}')" != "$cargo_deb_version" ]; then
  nice -n 10 cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi

step "build: cargo deb -p passerelle-proxy (and the test PKI generator)"
rm -f target/debian/passerelle_*.deb
nice -n 10 cargo deb -p passerelle-proxy
nice -n 10 cargo build --release --quiet -p passerelle-certs-test
deb=$(ls target/debian/passerelle_*.deb)
[ "$(echo "$deb" | wc -l)" -eq 1 ] || fail "expected one package in target/debian: $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/passerelle ./usr/lib/systemd/system/passerelle.service \
         ./usr/share/passerelle/passerelle.toml.example ./usr/share/doc/passerelle/copyright; do
  grep -q " $f\$" <<<"$contents" || fail "$deb lacks $f"
done
depends=$(dpkg-deb --field "$deb" Depends)
for d in libssl3 libxmlsec1-openssl libxml2 libc6 adduser procps; do
  grep -qw "$d" <<<"$depends" || fail "Depends lacks $d: $depends"
done
# Every library the binary links is provided by a package named in Depends (or by libc6's
# own dependencies: libgcc-s1).
echo "ldd target/release/passerelle:"
ldd target/release/passerelle | awk '/=>/{print "  " $1}'

step "base image $base"
if ! "${podman[@]}" image exists "$base"; then
  # As /work/shared/docs/containers.md: no registry here, a minbase from the Debian mirror.
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  mkdir -p "$work"
  mmdebstrap --variant=minbase --include=ca-certificates bookworm "$work/base.tar" "$mirror"
  "${podman[@]}" import "$work/base.tar" "$base"
  rm -f "$work/base.tar"
fi
echo "using $base"

step "sandbox PKI (passerelle-certs-test) for the filled-in configuration"
rm -rf "$work/pki" "$work/in"
mkdir -p "$work/in"
target/release/passerelle-certs-test --out "$work/pki" --tenants 2 >/dev/null
cp "$deb" "$work/in/"

# What runs inside the containers. $1: "install" (with network) or "test" (without).
cat >"$work/in/inside.sh" <<'INSIDE'
#!/bin/bash
set -uo pipefail
failures=0
ok()   { echo "  ok    $*"; }
bad()  { echo "  FAIL  $*"; failures=$((failures + 1)); }
# expect "what" command...: the command succeeds.
expect() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# mode OWNER:GROUP MODE PATH
mode() {
  local got
  got=$(stat -c '%U:%G %a' "$3" 2>/dev/null || echo "missing")
  if [ "$got" = "$1 $2" ]; then ok "$3 is $got"; else bad "$3 is $got, expected $1 $2"; fi
}

# The installed example filled in with the sandbox test PKI: CA files, tenant B's PKCS#12
# files under the example's tenant, and tenant B's structure ids (the lines of the
# sandbox configuration, $STRUCTURE_LINES) in place of the example's.
fill_in() {
  local pki=/pki config=/etc/passerelle/passerelle.toml f
  install -m 0644 $pki/ca/root.pem /etc/passerelle/ca/igc-sante-root.pem
  install -m 0644 $pki/ca/org-intermediate.pem /etc/passerelle/ca/igc-sante-org.pem
  install -m 0644 $pki/ca/org-intermediate.crl.pem /etc/passerelle/ca/ACI-EL-ORG.crl
  install -m 0644 $pki/ca/root.pem /etc/passerelle/ca/dmp-server-root.pem
  install -d -o passerelle -g passerelle -m 0700 /etc/passerelle/tenants/chu-exemple
  for f in $pki/tenants/ch-test-b/*.p12 $pki/tenants/ch-test-b/*.p12.password; do
    install -o passerelle -g passerelle -m 0600 "$f" /etc/passerelle/tenants/chu-exemple/
  done
  grep -v '^\(structure_id\|geographic_structure_ids\) = ' $config >/tmp/config.toml
  awk '{ print } /^id = "chu-exemple"/ { print ENVIRON["STRUCTURE_LINES"] }' /tmp/config.toml >$config
}

# GET path on the admin listener with bash's /dev/tcp (no curl in the base image).
get() {
  exec 3<>/dev/tcp/127.0.0.1/9090 || return 1
  printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$1" >&3
  cat <&3; exec 3<&-
}

if [ "$1" = install ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || exit 1
  echo "  apt-get install ./$(basename /in/passerelle_*.deb):"
  apt-get install -y --no-install-recommends /in/passerelle_*.deb >/tmp/apt.log 2>&1
  rc=$?
  awk '/^The following NEW packages/ { on = 1; print; next }
       on && /^  / { print; next } { on = 0 }
       /^[0-9]+ upgraded|^Setting up passerelle|^passerelle:|^  (runuser|then)/' /tmp/apt.log | sed 's/^/    /'
  [ $rc -eq 0 ] || { cat /tmp/apt.log; exit 1; }
  # systemd only for `systemd-analyze verify`: the package does not need it.
  apt-get install -y -qq --no-install-recommends systemd >/tmp/apt-systemd.log 2>&1 \
    || { cat /tmp/apt-systemd.log; exit 1; }
  apt-get clean
  exit 0
fi

if [ "$1" = boot ]; then
  # systemd is PID 1 here: the unit itself, with every hardening line in force.
  for _ in $(seq 60); do
    state=$(systemctl is-system-running 2>/dev/null)
    case $state in running|degraded) break ;; esac
    sleep 0.5
  done
  expect "systemd booted ($state)" test "$state" = running -o "$state" = degraded
  fill_in
  expect "systemctl start passerelle" systemctl start passerelle
  for _ in $(seq 100); do get /healthz >/dev/null 2>&1 && break; sleep 0.1; done
  expect "active under the hardened unit" systemctl is-active --quiet passerelle
  expect "/readyz 200 ready" bash -c "$(declare -f get); get /readyz | grep -q '^ready'"
  expect "process metrics readable (ProtectProc=invisible)" \
    bash -c "$(declare -f get); get /metrics | grep -q '^process_start_time_seconds '"
  expect "audit trail created 0600 by passerelle in ReadWritePaths" \
    test "$(stat -c '%U %a' /var/lib/passerelle/audit/passerelle-audit.jsonl 2>/dev/null)" = "passerelle 600"
  expect "systemctl reload passerelle" systemctl reload passerelle
  for _ in $(seq 50); do journalctl -u passerelle -o cat | grep -q 'reloaded' && break; sleep 0.1; done
  expect "reloaded on SIGHUP" bash -c "journalctl -u passerelle -o cat | grep -q '\"trigger\":\"SIGHUP\"'"
  expect "systemctl stop passerelle (drains)" systemctl stop passerelle
  expect "stopped cleanly: $(systemctl show passerelle -p Result --value), exit $(systemctl show passerelle -p ExecMainStatus --value)" \
    test "$(systemctl show passerelle -p Result --value):$(systemctl show passerelle -p ExecMainStatus --value)" = success:0
  [ $failures -eq 0 ] || journalctl -u passerelle -o cat --no-pager | tail -20 | sed 's/^/    /'
  echo "-- $failures failure(s)"
  exit $((failures > 0))
fi

echo "-- the passerelle user"
entry=$(getent passwd passerelle)
if [ -n "$entry" ]; then ok "user: $entry"; else bad "no passerelle user"; fi
IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
expect "system uid ($uid < 1000)" test "${uid:-9999}" -lt 1000
expect "group passerelle ($(getent group passerelle))" test "$(getent group passerelle | cut -d: -f3)" = "$gid"
expect "home /var/lib/passerelle" test "$home" = /var/lib/passerelle
expect "no login shell ($shell)" test "$shell" = /usr/sbin/nologin

echo "-- files and modes"
mode root:root 755 /usr/bin/passerelle
mode root:root 644 /usr/lib/systemd/system/passerelle.service
mode root:root 644 /usr/share/passerelle/passerelle.toml.example
mode root:passerelle 750 /etc/passerelle
mode root:passerelle 640 /etc/passerelle/passerelle.toml
mode root:root 755 /etc/passerelle/ca
mode passerelle:passerelle 700 /etc/passerelle/tenants
mode passerelle:passerelle 700 /var/lib/passerelle
mode passerelle:passerelle 700 /var/lib/passerelle/audit
expect "postinst wrote a fresh instance_id" \
  bash -c "! grep -q '^instance_id = \"00000000-0000-0000-0000-000000000000\"' /etc/passerelle/passerelle.toml"
expect "the service is not enabled (no certificates yet)" \
  test ! -e /etc/systemd/system/multi-user.target.wants/passerelle.service

config=/etc/passerelle/passerelle.toml
as_passerelle() { runuser -u passerelle -- "$@"; }

echo "-- passerelle check on the example as installed: refused, only for the missing files"
out=$(as_passerelle passerelle check --config $config 2>&1); rc=$?
expect "exit 1 (got $rc)" test $rc -eq 1
errors=$(grep '^  error:' <<<"$out")
others=$(grep -v 'cannot read: No such file or directory' <<<"$errors")
expect "$(wc -l <<<"$errors") errors, each a missing CA or certificate file" test -z "$others"
[ -z "$others" ] || echo "$out"

echo "-- the example filled in with the sandbox test PKI (tenant ch-test-b's PKCS#12 files)"
fill_in
grep -A2 '^id = ' $config | sed 's/^/    /'
out=$(as_passerelle passerelle check --config $config 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
expect "passerelle check exit 0 as user passerelle (got $rc)" test $rc -eq 0
expect "4 certificates, each ok" test "$(grep -c '^chu-exemple .* ok$' <<<"$out")" -eq 4

echo "-- systemd-analyze verify /usr/lib/systemd/system/passerelle.service"
out=$(systemd-analyze verify /usr/lib/systemd/system/passerelle.service 2>&1); rc=$?
[ -z "$out" ] || echo "$out" | sed 's/^/    /'
expect "systemd-analyze verify: exit 0, nothing to say" test $rc -eq 0 -a -z "$out"
score=$(systemd-analyze security --offline=true /usr/lib/systemd/system/passerelle.service 2>/dev/null \
  | sed -n 's/.*Overall exposure level for passerelle.service: *//p')
echo "    systemd-analyze security: ${score:-?}"
expect "exposure level below 2.0 (${score:-?})" \
  awk -v s="${score%% *}" 'BEGIN { exit !(s != "" && s + 0 < 2.0) }'

echo "-- passerelle run as user passerelle: probes, reload, graceful stop"
log=/tmp/passerelle.log
# setpriv execs passerelle itself (runuser would stay in between and catch the signals).
setpriv --reuid=passerelle --regid=passerelle --init-groups \
  passerelle run --config $config --log-format json --grace 5s 2>$log &
pid=$!
for _ in $(seq 100); do get /healthz >/dev/null 2>&1 && break; sleep 0.1; done
expect "/healthz 200" bash -c "$(declare -f get); get /healthz | head -1 | grep -q ' 200 '"
expect "/readyz 200 ready" bash -c "$(declare -f get); get /readyz | grep -q '^ready'"
expect "audit folder still passerelle 0700" test "$(stat -c '%U %a' /var/lib/passerelle/audit)" = "passerelle 700"
kill -HUP $pid
for _ in $(seq 50); do grep -q 'reloaded' $log && break; sleep 0.1; done
expect "SIGHUP reloads" grep -q 'configuration and certificates reloaded' $log
kill -TERM $pid
wait $pid; rc=$?
expect "SIGTERM: exit 0 (got $rc)" test $rc -eq 0
[ $failures -eq 0 ] || { echo "    passerelle log:"; sed 's/^/    /' $log; }

echo "-- $failures failure(s)"
exit $((failures > 0))
INSIDE
chmod 0755 "$work/in/inside.sh"

step "install the package in $base (apt, dependencies from the mirror)"
"${podman[@]}" rm -f passerelle-package-test >/dev/null 2>&1 || true
"${podman[@]}" run "${limits[@]}" --network=host --name passerelle-package-test \
  -v "$PWD/$work/in:/in:ro" "$base" /in/inside.sh install || fail "apt-get install in the container"
"${podman[@]}" commit --quiet passerelle-package-test "$image" >/dev/null
"${podman[@]}" rm passerelle-package-test >/dev/null
cleanup() { "${podman[@]}" rmi -f "$image" >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "checks in the installed container (no network)"
# Tenant ch-test-b's structure_id and geographic_structure_ids lines, from the sandbox
# configuration that passerelle-certs-test wrote.
structure_lines=$(awk '/^id = "ch-test-b"/ { on = 1; next } on && /^(structure_id|geographic_structure_ids) = / { print } /^$/ { on = 0 }' "$work/pki/passerelle.toml")
[ "$(wc -l <<<"$structure_lines")" -eq 2 ] || fail "tenant ch-test-b's structure ids not found in $work/pki/passerelle.toml"
"${podman[@]}" run "${limits[@]}" --rm --network=none -e STRUCTURE_LINES="$structure_lines" \
  -v "$PWD/$work/in:/in:ro" -v "$PWD/$work/pki:/pki:ro" "$image" /in/inside.sh test \
  || fail "checks in the container"

if [ "${PACKAGE_TEST_BOOT:-1}" = 1 ]; then
  step "the unit under systemd: the same image booted with systemd as PID 1 (no network)"
  "${podman[@]}" rm -f passerelle-package-boot >/dev/null 2>&1 || true
  cleanup() {
    "${podman[@]}" rm -f passerelle-package-boot >/dev/null 2>&1 || true
    "${podman[@]}" rmi -f "$image" >/dev/null 2>&1 || true
  }
  "${podman[@]}" run "${limits[@]}" -d --name passerelle-package-boot --network=none \
    --systemd=always -e STRUCTURE_LINES="$structure_lines" \
    -v "$PWD/$work/in:/in:ro" -v "$PWD/$work/pki:/pki:ro" "$image" /lib/systemd/systemd >/dev/null \
    || fail "systemd does not boot in a container here (PACKAGE_TEST_BOOT=0 skips this stage)"
  "${podman[@]}" exec -e STRUCTURE_LINES="$structure_lines" passerelle-package-boot /in/inside.sh boot \
    || fail "the unit under systemd"
fi

echo
echo "package-test: PASS ($deb, $(($(date +%s) - started))s)"
