package config

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// keyAt is where a key was written: its file and line.
type keyAt struct {
	file string
	line int
}

// finish runs once both files are decoded: it fills the keys that follow
// another key when not written (workers.discovery.workers_dir,
// binaries.path and format, resources.base_path and the dev watch patterns
// follow workers.workers_dir) and rejects combinations that contradict each
// other. set holds the keys written (with a value) in either file.
func finish(c *Config, set map[string]keyAt) error {
	has := func(k string) bool { _, ok := set[k]; return ok }
	errAt := func(k, format string, args ...any) error {
		at := set[k]
		return &Error{File: at.file, Line: at.line, Msg: oneLine(fmt.Sprintf(format, args...))}
	}
	w := &c.Workers

	// workers.discovery.workers_dir is the deployment specification's name
	// for the same directory.
	switch {
	case has("workers.discovery.workers_dir") && has("workers.workers_dir"):
		if cleanDir(w.Discovery.WorkersDir) != cleanDir(w.WorkersDir) {
			return errAt("workers.discovery.workers_dir",
				"workers.discovery.workers_dir (%q) differs from workers.workers_dir (%q): both name the one workers directory; set them equal, or remove discovery.workers_dir (it then follows workers_dir)",
				w.Discovery.WorkersDir, w.WorkersDir)
		}
	case has("workers.discovery.workers_dir"):
		w.WorkersDir = w.Discovery.WorkersDir
	default:
		w.Discovery.WorkersDir = w.WorkersDir
	}
	wd := cleanDir(w.WorkersDir)

	// binaries: path decides; format is its file name.
	b := &c.Binaries
	switch {
	case has("binaries.path") && has("binaries.format"):
		if base := path.Base(b.Path); base != b.Format {
			return errAt("binaries.format",
				"binaries.format (%q) must be the file name that binaries.path (%q) ends in, %q: the path alone places the binary; drop format or make them agree",
				b.Format, b.Path, base)
		}
	case has("binaries.path"):
		b.Format = path.Base(b.Path)
	default:
		b.Path = wd + "/" + workerNamePlaceholder + "/bin/" + b.Format
	}
	if has("binaries.path") && wd != DefaultWorkersDirName && strings.HasPrefix(b.Path, DefaultWorkersDirName+"/"+workerNamePlaceholder+"/") {
		return errAt("binaries.path",
			"binaries.path (%q) is under workers/, but workers.workers_dir is %q: the binaries would not be in the worker directories; write %q or remove binaries.path (it then follows workers_dir)",
			b.Path, w.WorkersDir, wd+strings.TrimPrefix(b.Path, DefaultWorkersDirName))
	}
	for _, area := range []string{"src", "public", "private"} {
		if strings.HasPrefix(b.Path, wd+"/"+workerNamePlaceholder+"/"+area+"/") {
			return errAt("binaries.path",
				"binaries.path (%q) puts binaries in each worker's %s/, which %s; use bin/ (the default) or a directory outside the workers",
				b.Path, area, map[string]string{
					"src":     "the watcher rebuilds on every change (a build would trigger the next one)",
					"public":  "is served to anyone as static files",
					"private": "is the worker's own resources, reloaded when they change",
				}[area])
		}
	}
	binDir := path.Dir(b.Path)

	// build.output_dir: where builds write, as the deployment specification
	// spells it; it has to be where the server runs binaries from.
	for _, m := range []struct {
		key, dir, means string
	}{
		{"deployment.dev.build.output_dir", c.Deployment.Dev.Build.OutputDir,
			path.Join(wd, workerNamePlaceholder, c.Deployment.Dev.Build.OutputDir)},
		{"deployment.prod.build.output_dir", c.Deployment.Prod.Build.OutputDir,
			path.Join(cleanDir(c.Deployment.Prod.Build.OutputDir), workerNamePlaceholder, "bin")},
	} {
		if has(m.key) && m.means != binDir {
			return errAt(m.key,
				"%s (%q) would put builds in %s/, but the server runs binaries from %s/ (binaries.path %q): builds always go where the server runs them; remove output_dir, and set binaries.path to move binaries",
				m.key, m.dir, m.means, binDir, b.Path)
		}
	}

	// resources.base_path: public/ and private/ are in the worker directory.
	for _, r := range []struct {
		key string
		res *Resources
	}{
		{"deployment.dev.resources.base_path", &c.Deployment.Dev.Resources},
		{"deployment.prod.resources.base_path", &c.Deployment.Prod.Resources},
	} {
		if !has(r.key) {
			r.res.BasePath = w.WorkersDir
			continue
		}
		if cleanDir(r.res.BasePath) != wd {
			return errAt(r.key,
				"%s (%q) must be the workers directory (workers.workers_dir, %q): each worker's public/ and private/ are in its own directory, where TQ_WORKER_BASE points; remove base_path (it then follows workers.workers_dir), and set workers.workers_dir to move the workers",
				r.key, r.res.BasePath, w.WorkersDir)
		}
	}

	if !has("deployment.dev.file_watcher.watch_patterns") {
		c.Deployment.Dev.FileWatcher.WatchPatterns = DefaultWatchPatterns(w.WorkersDir)
	}

	if has("deployment.on_file_change") {
		for _, a := range []string{OnChangeRestartServer, OnChangeRestartWorker} {
			if !slices.Contains(c.Deployment.OnFileChange, a) {
				return errAt("deployment.on_file_change",
					"deployment.on_file_change must list %s: tqserver always does both %s (a changed server/bin/tqserver is reported on reload) and %s (a changed worker binary restarts that worker, and only it); list both or remove the key; to skip the checks on SIGHUP, set deployment.check_on_sighup: false",
					a, OnChangeRestartServer, OnChangeRestartWorker)
			}
		}
	}
	return nil
}

// DefaultWorkersDirName is workers.workers_dir when not set.
const DefaultWorkersDirName = "workers"

// DefaultWatchPatterns is deployment.dev.file_watcher.watch_patterns when
// not set, for the workers directory workersDir: every worker source file,
// the config files, and the server's own sources (watched only in the
// tqserver repository itself).
func DefaultWatchPatterns(workersDir string) []string {
	return []string{cleanDir(workersDir) + "/*/src/**", "config/*.yaml", "cmd/**", "internal/**", "pkg/**"}
}

// cleanDir is a directory key in slash form, cleaned ("./workers/" is
// "workers").
func cleanDir(p string) string { return path.Clean(filepath.ToSlash(p)) }
