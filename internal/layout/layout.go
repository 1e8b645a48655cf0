package layout

import (
	"path/filepath"
	"strings"
)

// Paths relative to the app root, slash-separated (they also appear in
// messages).
const (
	ConfigDir            = "config"
	ServerConfigFile     = "config/server.yaml"
	DeploymentConfigFile = "config/deployment.yaml"
	// DefaultWorkersDir is the workers directory when workers.workers_dir
	// (and server.static.dev_root) are not set.
	DefaultWorkersDir = "workers"
	VarDir            = "var"
	DBFile            = "var/tqserver.db"
	SocketFile        = "var/tqserver.sock"
	PIDFile           = "var/tqserver.pid"
	// ServerBinaryFile is the server's own deployed binary; a reload
	// compares its stamp (CONTRACT.md §4, §11).
	ServerBinaryFile = "server/bin/tqserver"
	// ServerMainFile marks an app root that is the tqserver repository
	// itself: dev mode then also watches and rebuilds the server.
	ServerMainFile = "cmd/tqserver/main.go"
)

// Names inside workers/{name}/.
const (
	SrcDir     = "src"
	MainFile   = "main.go" // in SrcDir
	BinDir     = "bin"
	PublicDir  = "public"
	PrivateDir = "private"
	// ChecksumSuffix names a binary's digest file: bin/{name}.sha256.
	ChecksumSuffix = ".sha256"
)

// DefaultIncludePattern is workers.discovery.include_patterns when not set:
// a directory with src/main.go is a worker to build.
const DefaultIncludePattern = "*/" + SrcDir + "/" + MainFile

// serverSourceDirs are the server's own source directories, watched in dev
// mode when the root has ServerMainFile.
var serverSourceDirs = []string{"cmd", "internal", "pkg"}

// Options are the configured parts of a layout.
type Options struct {
	// WorkersDir is workers.workers_dir: relative to the root, or absolute.
	// Empty means DefaultWorkersDir.
	WorkersDir string
	// StaticDir is server.static.dev_root, the directory holding the
	// {name}/public/ trees served as static files. Empty means the workers
	// directory.
	StaticDir string
	// IncludePatterns is workers.discovery.include_patterns, relative to
	// the workers directory. Nil means DefaultIncludePattern; an empty,
	// non-nil list selects nothing to build.
	IncludePatterns []string
	// BinaryPath is binaries.path: where each worker's binary is, relative
	// to the root (or absolute), with WorkerNamePlaceholder for the name.
	// Empty means {WorkersDir}/{name}/bin/{name}.
	BinaryPath string
}

// WorkerNamePlaceholder stands for the worker's name in Options.BinaryPath.
const WorkerNamePlaceholder = "{worker_name}"

// Root is the layout of one app root.
type Root struct {
	dir     string
	workers string
	static  string
	include []string
	binary  string // absolute BinaryPath template; "" = the default
}

// New returns the layout of the app root dir. dir should be absolute; every
// path the layout returns is under it (or as configured, when absolute).
func New(dir string, o Options) Root {
	r := Root{dir: dir, include: o.IncludePatterns}
	r.workers = r.resolve(o.WorkersDir, DefaultWorkersDir)
	r.static = r.resolve(o.StaticDir, r.workers)
	if r.include == nil {
		r.include = []string{DefaultIncludePattern}
	}
	if o.BinaryPath != "" {
		r.binary = r.resolve(o.BinaryPath, "")
	}
	return r
}

func (r Root) resolve(p, def string) string {
	if p == "" {
		p = def
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(r.dir, filepath.FromSlash(p))
}

// Path returns rel (slash-separated, one of the constants above) under the root.
func (r Root) Path(rel string) string { return filepath.Join(r.dir, filepath.FromSlash(rel)) }

// Dir is the app root.
func (r Root) Dir() string { return r.dir }

// ConfigDir is {root}/config.
func (r Root) ConfigDir() string { return r.Path(ConfigDir) }

// ServerConfig is {root}/config/server.yaml.
func (r Root) ServerConfig() string { return r.Path(ServerConfigFile) }

// DeploymentConfig is {root}/config/deployment.yaml.
func (r Root) DeploymentConfig() string { return r.Path(DeploymentConfigFile) }

// VarDir is {root}/var, the server's state.
func (r Root) VarDir() string { return r.Path(VarDir) }

// DB is the history log, {root}/var/tqserver.db.
func (r Root) DB() string { return r.Path(DBFile) }

// Socket is the admin socket, {root}/var/tqserver.sock.
func (r Root) Socket() string { return r.Path(SocketFile) }

// PID is {root}/var/tqserver.pid.
func (r Root) PID() string { return r.Path(PIDFile) }

// ServerBinary is {root}/server/bin/tqserver.
func (r Root) ServerBinary() string { return r.Path(ServerBinaryFile) }

// WorkersDir is the directory holding the workers.
func (r Root) WorkersDir() string { return r.workers }

// StaticDir is the directory holding the {name}/public/ trees served under
// the static prefix.
func (r Root) StaticDir() string { return r.static }

// IncludePatterns are the patterns Discover(Sources) uses.
func (r Root) IncludePatterns() []string { return append([]string(nil), r.include...) }

// Worker is the worker name under the workers directory, with its binary
// where binaries.path puts it; name is not checked.
func (r Root) Worker(name string) Worker {
	w := WorkerAt(r.workers, name)
	if r.binary != "" {
		w.bin = strings.ReplaceAll(r.binary, WorkerNamePlaceholder, name)
	}
	return w
}

// IsServerRepo reports whether the root is the tqserver repository itself
// (it has cmd/tqserver/main.go): dev mode then rebuilds server/bin/tqserver.
func (r Root) IsServerRepo() bool { return isFile(r.Path(ServerMainFile)) }

// ServerSources are the server's source directories that exist, when the
// root is the tqserver repository; nil otherwise.
func (r Root) ServerSources() []string {
	if !r.IsServerRepo() {
		return nil
	}
	var out []string
	for _, d := range serverSourceDirs {
		if p := r.Path(d); isDir(p) {
			out = append(out, p)
		}
	}
	return out
}

// Worker is one worker directory, workers/{name}.
type Worker struct {
	Name string
	Dir  string
	bin  string // the configured binary (Root.Worker); "" = bin/{name}
}

// WorkerAt is the worker name under workersDir.
func WorkerAt(workersDir, name string) Worker {
	return Worker{Name: name, Dir: filepath.Join(workersDir, name)}
}

// WorkerOf is the worker whose directory is dir (its name is dir's last element).
func WorkerOf(dir string) Worker {
	return Worker{Name: filepath.Base(dir), Dir: dir}
}

// Src is workers/{name}/src.
func (w Worker) Src() string { return filepath.Join(w.Dir, SrcDir) }

// Main is workers/{name}/src/main.go.
func (w Worker) Main() string { return filepath.Join(w.Dir, SrcDir, MainFile) }

// HasSource reports whether the worker has src/main.go (a regular file).
func (w Worker) HasSource() bool { return isFile(w.Main()) }

// BinDir is the directory of Binary: workers/{name}/bin by default.
func (w Worker) BinDir() string { return filepath.Dir(w.Binary()) }

// Binary is the worker's binary: workers/{name}/bin/{name}, or where
// binaries.path puts it for a Worker from Root.Worker (or Discover).
func (w Worker) Binary() string {
	if w.bin != "" {
		return w.bin
	}
	return filepath.Join(w.Dir, BinDir, w.Name)
}

// Checksum is Binary() + ".sha256": workers/{name}/bin/{name}.sha256.
func (w Worker) Checksum() string { return ChecksumOf(w.Binary()) }

// Public is workers/{name}/public.
func (w Worker) Public() string { return filepath.Join(w.Dir, PublicDir) }

// Private is workers/{name}/private.
func (w Worker) Private() string { return filepath.Join(w.Dir, PrivateDir) }

// Route is the worker's route; see Route.
func (w Worker) Route() string { return Route(w.Name) }

// ChecksumOf is the digest file of the binary at path: path + ".sha256".
func ChecksumOf(binary string) string { return binary + ChecksumSuffix }

// NamePattern is the rule ValidName checks, for messages.
const NamePattern = `^[a-z0-9][a-z0-9_-]*$`

// ValidName reports whether name may be a worker (CONTRACT.md §1): it
// matches NamePattern. It runs on every static request, so it is a loop,
// not a regexp.
func ValidName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case (c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Route returns the route of a worker (CONTRACT.md §1): "index" is "/",
// any other name maps "_" to "/", so "api_users" is "/api/users".
func Route(name string) string {
	if name == "index" {
		return "/"
	}
	return "/" + strings.ReplaceAll(name, "_", "/")
}
