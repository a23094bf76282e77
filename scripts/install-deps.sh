#!/usr/bin/env bash
# Installs the Debian 12 packages Passerelle builds, tests and runs its sandbox with
# (and, with --bench, its load comparison).
# Idempotent and quick when everything is present; uses sudo when not run as root.
set -euo pipefail

packages=(
  pkg-config libssl-dev openssl   # OpenSSL: key generation, PKCS#12, chain checks
  libxmlsec1-dev libclang-dev     # libxmlsec1 + bindgen: signature verification
  xmlsec1 libxml2-utils           # reference verifier and xmllint for tests
  curl ca-certificates            # the sandbox's sample requests
  prometheus                      # promtool: checks deploy/prometheus's alert rules in the tests
  tinyproxy                       # the real forward proxy of the egress tests
  postgresql                      # the real database of the PostgreSQL audit sink's tests
  softhsm2 opensc                 # a real PKCS#11 token (SoftHSM2) and OpenSC's pkcs11-tool for the HSM tests
)
# `--bench`: what the load comparison needs besides (nginx as the reference proxy, a font
# for the chart).
if [ "${1:-}" = "--bench" ]; then
  packages+=(nginx-light fonts-dejavu-core)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Only their programs are wanted: the packages' Prometheus server, tinyproxy and
# PostgreSQL services must not run (a host with systemd would start them on install; the
# tests start their own, on ports of their own).
for service in prometheus tinyproxy postgresql; do
  if [[ " ${missing[*]} " == *" $service "* ]]; then
    if [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now "$service.service" >/dev/null 2>&1 || true
    else
      $sudo service "$service" stop >/dev/null 2>&1 || true
      $sudo update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
  fi
done
