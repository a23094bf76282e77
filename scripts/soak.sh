#!/usr/bin/env bash
# The soak: the sandbox stack (mock DMP, mock INSi, Passerelle; release builds, each its
# own process) under a steady mixed load for DURATION, with a reload every 5 minutes and
# a burst of upstream faults every 10:
#
#   scripts/soak.sh [DURATION]          DURATION: 60m (default), 90s, 2h, or seconds
#   scripts/soak.sh --judge [DURATION]  judge and draw the last run again (its files)
#
# It first measures the stack's capacity on this machine (mixed INSi / dmp-query /
# dmp-submit at a fixed concurrency), then runs at 50 % of it, sampling every 10 s
# Passerelle's resident memory, open file descriptors, client connections, CPU and the
# latency. Writes target/soak/soak.csv, soak.png (the chart) and soak.json; prints the
# verdicts (memory drift after the warm-up <= 10 %, descriptors flat, no error outside
# the injected faults, p99 stable) and exits 1 when one fails. Settings beyond the
# duration (SOAK_WARMUP, SOAK_LOAD, SOAK_RELOAD_EVERY, ...): benches/benches/soak.rs.
#
# To keep another job off the stack's cores, pin it: taskset -c 0 scripts/soak.sh 60m
# measures and soaks on CPU 0 alone.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--judge" ]]; then
  # Judge and draw the last run again from target/soak/soak.{csv,json}, with the
  # settings of a run of DURATION (give the same as the run's).
  export SOAK_REJUDGE=1
  shift
fi
duration="${1:-60m}"
if ! [[ "$duration" =~ ^([0-9]{1,7})([hms]?)$ ]]; then
  echo "soak.sh: DURATION is a whole number with h, m or s (default s), e.g. 60m, 90s, 2h (got '$duration')" >&2
  exit 2
fi
number=$((10#${BASH_REMATCH[1]}))
case "${BASH_REMATCH[2]}" in
  h) seconds=$((number * 3600)) ;;
  m) seconds=$((number * 60)) ;;
  *) seconds=$number ;;
esac
if (( seconds < 60 )); then
  echo "soak.sh: DURATION must be at least 60 s (got '$duration')" >&2
  exit 2
fi
# A short soak scales its schedule down (a warm-up of a twelfth, reloads and bursts
# several times within it); a long one keeps the defaults (5 min warm-up, reload every
# 5 min, faults every 10 from 7.5 min).
if (( seconds < 3600 )); then
  export SOAK_WARMUP=${SOAK_WARMUP:-$(( seconds / 12 > 10 ? seconds / 12 : 10 ))}
  export SOAK_RELOAD_EVERY=${SOAK_RELOAD_EVERY:-$(( seconds / 12 > 20 ? seconds / 12 : 20 ))}
  export SOAK_BURST_EVERY=${SOAK_BURST_EVERY:-$(( seconds / 6 > 30 ? seconds / 6 : 30 ))}
  export SOAK_BURST_FIRST=${SOAK_BURST_FIRST:-$(( seconds / 8 > 15 ? seconds / 8 : 15 ))}
  export SOAK_BURST_SECONDS=${SOAK_BURST_SECONDS:-$(( seconds / 180 > 5 ? seconds / 180 : 5 ))}
fi
export SOAK_SECONDS=$seconds

scripts/install-deps.sh --bench >&2
exec cargo bench -p passerelle-benches --bench soak
