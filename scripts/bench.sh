#!/usr/bin/env bash
# The benchmark (issue 7): builds the Go load generator, starts a throwaway Postgres (scripts/pg.sh) and
# etcd (scripts/etcd.sh), runs bench/run.ts and writes bench/results/latest.json. Loopback only.
#   npm run bench                 full run (about 16 minutes on 2 cores)
#   npm run bench -- --quick      the same fields with smaller counts (under two minutes), written to a .tmp file
#   npm run bench -- --only=hot,renew,wake,goodput,etcd,scale,replicas   a subset (written to a .tmp file)
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
ensure_node_modules

command -v go >/dev/null || { echo "bench: Go is required for the load generator (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$TOOLS/bench"
(cd bench/loadgen && go build -o "$TOOLS/bench/loadgen" .)
export KEYMESH_BENCH_LOADGEN="$TOOLS/bench/loadgen"
# The Python client's section runs bench/python/clients_bench.py with the client installed in the venv.
ensure_venv
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e "clients/python[test]"
export KEYMESH_BENCH_PYTHON="$VENV/bin/python"

# A Postgres cluster of the bench's own (.tmp/pg-bench), so a concurrent test run neither shares nor stops it.
export KEYMESH_PG_NAME=pg-bench
source scripts/pg.sh
source scripts/etcd.sh
pg_start
trap 'etcd_stop; pg_stop' EXIT

# --profile=MODE[:C[:SECONDS[:DB[:WAIT]]]]: one load run under node --cpu-prof, then a summary of where the server's time went.
case "${1:-}" in --profile=*)
  IFS=: read -r mode conc secs db wait <<<"${1#--profile=}"
  prof_dir="$TOOLS/bench/profiles"
  rm -rf "$prof_dir" && mkdir -p "$prof_dir"
  node --cpu-prof --cpu-prof-dir="$prof_dir" --import tsx bench/profile.ts "$mode" "${conc:-64}" "${secs:-8}" "${db:-postgres}" "${wait:-1s}"
  tsx bench/cpuprofile.ts "$(ls "$prof_dir"/*.cpuprofile | head -n 1)" 30
  exit 0
  ;;
esac

# etcd, the baseline of the vs_etcd section, only when that section runs.
wants_etcd=1
for arg in "$@"; do
  case "$arg" in --only=*) [[ ",${arg#--only=}," == *,etcd,* ]] || wants_etcd=0 ;; esac
done
if [ "$wants_etcd" = 1 ]; then etcd_start; fi

# Node and Postgres share the machine's cores with the load generator: nothing else should run meanwhile.
node --expose-gc --import tsx bench/run.ts "$@"
