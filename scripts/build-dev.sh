#!/usr/bin/env bash
# Development build: every worker whose binary is missing or older than its
# sources, or only the workers named. Thin over `tqserver build --outdated`.
#
#   scripts/build-dev.sh [worker...]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

echo "Building out-of-date workers in $ROOT/workers (dev)..."
"${TQ[@]}" build --root "$ROOT" --outdated "$@"
echo "Development build complete."
