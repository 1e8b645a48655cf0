#!/usr/bin/env bash
# Production build: the server (when the app root is the tqserver repository)
# and every worker, or only the workers named, in parallel
# (deployment.prod.build.parallel_builds), with deployment.prod.build.ldflags
# (default "-s -w") and a bin/NAME.sha256 next to each binary. A binary whose
# bytes do not change keeps its file and mtime, so a deploy ships nothing for
# it. Thin over `tqserver build --prod`.
#
#   scripts/build-prod.sh [worker...]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

args=(build --root "$ROOT" --prod)
if [[ $# -eq 0 && -f "$ROOT/cmd/tqserver/main.go" ]]; then
	args+=(--server)
fi
echo "Building for production in $ROOT..."
"${TQ[@]}" "${args[@]}" "$@"
echo "Production build complete: workers/*/bin/NAME (+ .sha256)."
