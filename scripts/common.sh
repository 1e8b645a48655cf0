# shellcheck shell=bash
# shellcheck disable=SC2034 # ROOT, PROG and TQ are for the scripts that source this
# Sourced by build-dev.sh, build-prod.sh and deploy.sh: the app root and the
# tqserver command they run. Not a script of its own.
#
#   TQ_ROOT    the app root (default: the directory above scripts/)
#   TQSERVER   the tqserver binary to run (default: the root's own source
#              when the root is the tqserver repository, else tqserver on PATH)

ROOT="${TQ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PROG="$(basename "$0")"

die() {
	echo "$PROG: $*" >&2
	exit 1
}

[[ -d "$ROOT" ]] || die "app root $ROOT is not a directory (set TQ_ROOT)"

# TQ: the tqserver command, as an array.
if [[ -n "${TQSERVER:-}" ]]; then
	[[ -x "$TQSERVER" ]] || command -v "$TQSERVER" >/dev/null 2>&1 ||
		die "TQSERVER=$TQSERVER is not an executable"
	TQ=("$TQSERVER")
elif [[ -f "$ROOT/cmd/tqserver/main.go" ]]; then
	TQ=(go -C "$ROOT" run ./cmd/tqserver)
elif command -v tqserver >/dev/null 2>&1; then
	TQ=(tqserver)
else
	die "tqserver not found: put it on PATH or set TQSERVER=/path/to/tqserver"
fi
