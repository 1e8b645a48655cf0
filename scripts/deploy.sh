#!/usr/bin/env bash
# Ship built binaries and assets to a target, then reload the server there.
#
#   scripts/deploy.sh [--no-reload] TARGET [worker...]
#
# TARGET is a name from config/deploy.yaml; its value is a local directory
# or user@host:path (an app root there). Without workers: every worker
# (workers/NAME without src/) and server/bin/tqserver; with workers: only
# those. rsync --checksum copies only files whose content changed, each to a
# temporary name and renamed into place at the end (--delay-updates), so the
# server never sees half a deploy. Then `tqserver reload` runs on the target
# and its output is shown: it waits until every restart has served or
# rolled back, and fails if one failed. --no-reload skips it (first deploy,
# before the server runs). A remote target runs `tqserver` over ssh
# (TQ_REMOTE_TQSERVER names another binary there). Needs rsync 3.2.3 or newer
# on both ends.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	echo "usage: $PROG [--no-reload] TARGET [worker...]   (targets: config/deploy.yaml)" >&2
	exit 2
}

reload=1
while [[ $# -gt 0 && "$1" == -* ]]; do
	case "$1" in
	--no-reload) reload=0 ;;
	-h | --help)
		sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) echo "$PROG: unknown option $1" >&2 && usage ;;
	esac
	shift
done
[[ $# -ge 1 ]] || usage
target_name="$1"
shift
workers=("$@")

deploy_yaml="$ROOT/config/deploy.yaml"
[[ -f "$deploy_yaml" ]] || die "no $deploy_yaml: copy it from the tqserver repository and name your targets there"

# targets prints "NAME VALUE" for each entry of the targets: map (one
# `name: value` a line; quotes and trailing comments removed).
targets() {
	awk '
		/^targets:[ \t]*(#.*)?$/ { in_t = 1; next }
		/^[^ \t#]/ { in_t = 0 }
		in_t && /^[ \t]+[A-Za-z0-9_.-]+:/ {
			line = $0
			sub(/[ \t]+#.*$/, "", line)
			name = line; sub(/^[ \t]+/, "", name); sub(/:.*$/, "", name)
			val = line; sub(/^[ \t]+[A-Za-z0-9_.-]+:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
			if (val ~ /^".*"$/ || val ~ /^\047.*\047$/) val = substr(val, 2, length(val) - 2)
			print name " " val
		}' "$deploy_yaml"
}

dest=""
while read -r name value; do
	if [[ "$name" == "$target_name" ]]; then
		dest="$value"
	fi
done < <(targets)
if [[ -z "$dest" ]]; then
	known=$(targets | awk '{print $1}' | paste -sd, -)
	die "unknown target $target_name in $deploy_yaml (targets: ${known:-none})"
fi

# user@host:path or host:path is remote; anything else is a local directory
# (relative to the app root).
host=""
path="$dest"
if [[ "$dest" =~ ^([^/:]+):(.+)$ ]]; then
	host="${BASH_REMATCH[1]}"
	path="${BASH_REMATCH[2]}"
elif [[ "$dest" != /* ]]; then
	path="$ROOT/$dest"
fi
command -v rsync >/dev/null 2>&1 || die "rsync not found: install it (apt-get install rsync)"

# What to ship.
if [[ ${#workers[@]} -gt 0 ]]; then
	for w in "${workers[@]}"; do
		[[ "$w" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "$w is not a worker name"
		[[ -f "$ROOT/workers/$w/bin/$w" ]] ||
			die "no $ROOT/workers/$w/bin/$w: build it first (scripts/build-prod.sh $w)"
	done
else
	[[ -d "$ROOT/workers" ]] || die "no $ROOT/workers directory"
fi

if [[ -n "$host" ]]; then
	echo "Deploying to $target_name ($host:$path)..."
	to="$host:$path"
else
	echo "Deploying to $target_name ($path)..."
	[[ -d "$path" ]] || die "target directory $path does not exist (create the app root there first)"
	to="$path"
fi

ship() { # src dest [rsync options...]
	local src="$1" dst="$2"
	shift 2
	rsync -a --checksum --delay-updates --mkpath --itemize-changes \
		--exclude='.*.build-*' "$@" "$src" "$dst"
}

if [[ ${#workers[@]} -gt 0 ]]; then
	for w in "${workers[@]}"; do
		echo "worker $w:"
		ship "$ROOT/workers/$w/" "$to/workers/$w/" --exclude=/src/
	done
else
	echo "all workers:"
	# --prune-empty-dirs: a worker that has only sources is not created there.
	ship "$ROOT/workers/" "$to/workers/" --exclude='/*/src/' --prune-empty-dirs
	if [[ -f "$ROOT/server/bin/tqserver" ]]; then
		echo "server:"
		ship "$ROOT/server/bin/" "$to/server/bin/" --include=tqserver --include=tqserver.sha256 --exclude='*'
	fi
fi

if [[ $reload -eq 0 ]]; then
	echo "Deployed to $target_name; not reloaded (--no-reload)."
	exit 0
fi
echo "Reloading the server on $target_name..."
if [[ -n "$host" ]]; then
	qpath=$(printf %q "$path")
	# The command line is for the remote shell: $qpath is quoted for it.
	# shellcheck disable=SC2029
	if ! ssh "$host" "${TQ_REMOTE_TQSERVER:-tqserver} reload --root $qpath"; then
		die "files are deployed, but the reload on $target_name failed (see above)"
	fi
elif ! "${TQ[@]}" reload --root "$path"; then
	die "files are deployed, but the reload on $target_name failed (see above)"
fi
echo "Deployed to $target_name."
