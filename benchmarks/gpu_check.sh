#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): on one GPU in at most about 8 minutes, writes
# benchmarks/gpu/<device>.md to commit; --dry-run rehearses the same steps on the CPU at toy size.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d ../shared/data ] && [ -z "${MSBENCH_DATA:-}" ]; then
    export MSBENCH_DATA="$(cd ../shared/data && pwd)"
fi
export MSBENCH_DOWNLOAD="${MSBENCH_DOWNLOAD:-0}"
exec timeout 540 python3 benchmarks/gpu_check.py "$@"
