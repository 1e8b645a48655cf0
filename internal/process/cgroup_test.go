package process

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// withCgroups turns cgroups on for one test (app root: a fresh temp dir)
// and returns that root. Where the machine has no usable cgroup v2 the test
// is skipped, saying why.
func withCgroups(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	dir, err := EnableCgroups(root)
	if err != nil {
		t.Skipf("cgroup v2 not usable here: %v", err)
	}
	t.Cleanup(func() {
		DisableCgroups()
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("cgroup %s left behind", dir)
		}
	})
	return root
}

func TestCgroupContainsDescendantWithoutMark(t *testing.T) {
	root := withCgroups(t)
	for _, then := range []string{"sleep", "exit"} {
		t.Run("leader "+then, func(t *testing.T) {
			spec := helperSpec(t, "spawn", "ignoreterm", "bare", then)
			spec.Mark = Mark(root, "w-"+then)
			p := start(t, spec)
			cpid, cticks := childOf(t, waitLine(t, p, "child "))
			dir, rel := instanceCgroup(spec.Mark)
			if then == "sleep" {
				if got := cgroupOf(p.PID); got != rel {
					t.Fatalf("leader in cgroup %q, want %q", got, rel)
				}
				if got := cgroupOf(cpid); got != rel {
					t.Fatalf("child in cgroup %q, want %q", got, rel)
				}
				if n := Marked(spec.Mark, p.StartTicks); n != 2 {
					t.Errorf("Marked = %d, want 2 (leader and child, by cgroup)", n)
				}
				stop(t, p, 100*time.Millisecond)
			} else {
				waitDone(t, p)
			}
			if Alive(cpid, cticks) {
				t.Fatalf("child %d with a clean environment outlived its instance", cpid)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("instance cgroup %s not removed: %v", dir, err)
			}
		})
	}
}

func TestMarkerMissesDescendantWithoutMark(t *testing.T) {
	// Without cgroups a descendant that drops its environment is not found:
	// the documented limit of the marker.
	spec := markedSpec(t, "spawn", "sleep", "bare", "sleep")
	p := start(t, spec)
	cpid, cticks := childOf(t, waitLine(t, p, "child "))
	waitLine(t, p, "ready")
	stop(t, p, time.Second)
	if !Alive(cpid, cticks) {
		t.Fatal("the unmarked child died without cgroups; TestCgroupContainsDescendantWithoutMark proves nothing")
	}
}

func TestCgroupSubreaperReapsKilledDescendants(t *testing.T) {
	root := withCgroups(t)
	subreaper(t)
	for _, group := range []string{"same", "setsid", "bare"} {
		t.Run(group, func(t *testing.T) {
			spec := helperSpec(t, "spawn", "ignoreterm", group, "sleep")
			spec.Mark = Mark(root, "w-"+group)
			stopReapsChild(t, spec)
		})
	}
}

func TestCgroupReapAfterCrash(t *testing.T) {
	// An instance of a crashed server: its leader is gone, its child (clean
	// environment, own session) lives on in the instance cgroup.
	root := withCgroups(t)
	mark := Mark(root, "api-3")
	dir, rel, fd, err := openCgroup(mark)
	if err != nil || fd < 0 {
		t.Fatalf("openCgroup = %q, %d, %v", dir, fd, err)
	}
	exe, _ := os.Executable()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "spawn", "ignoreterm", "bare", "exit")
	cmd.Env = helperEnviron()
	cmd.Stdout = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, UseCgroupFD: true, CgroupFD: fd}
	err = cmd.Start()
	unix.Close(fd)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // the child writes "ready" once it ignores SIGTERM
	ticks, _ := StartTicks(cmd.Process.Pid)
	sc := bufio.NewScanner(r)
	var child string
	ready := false
	for (child == "" || !ready) && sc.Scan() { // "child PID TICKS" and "ready", in any order
		if l := sc.Text(); l == "ready" {
			ready = true
		} else if strings.HasPrefix(l, "child ") {
			child = l
		}
	}
	_ = cmd.Wait()
	if child == "" || !ready {
		t.Fatalf("helper output: child line %q, ready %v", child, ready)
	}
	cpid, cticks := childOf(t, child)
	if got := cgroupOf(cpid); got != rel {
		t.Fatalf("child in cgroup %q, want %q", got, rel)
	}
	if c := Marked(mark, ticks); c != 1 {
		t.Fatalf("Marked = %d, want 1", c)
	}
	const grace = 200 * time.Millisecond
	t0 := time.Now()
	if c, err := ReapMarked(mark, ticks, grace); c != 1 || err != nil {
		t.Fatalf("ReapMarked = %d, %v; want 1, nil", c, err)
	}
	if d := time.Since(t0); d < grace {
		t.Errorf("ReapMarked took %s; the child ignores SIGTERM, so it should wait the grace %s", d, grace)
	}
	if Alive(cpid, cticks) {
		t.Error("child alive after ReapMarked")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("instance cgroup %s not removed: %v", dir, err)
	}
}

func TestEnableCgroupsRemovesEmptyLeftovers(t *testing.T) {
	root := withCgroups(t)
	dir, _ := instanceCgroup(Mark(root, "old-1"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := EnableCgroups(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("empty leftover %s not removed: %v", dir, err)
	}
	if d, _ := instanceCgroup(Mark(t.TempDir(), "x-1")); d != "" {
		t.Errorf("a mark of another app root maps to cgroup %s", d)
	}
	if d, _ := instanceCgroup(Mark(root, "..")); d != "" {
		t.Errorf("mark %q maps to cgroup %s", Mark(root, ".."), d)
	}
}

func TestParseOwnCgroup(t *testing.T) {
	const hybrid = "9:name=systemd:/\n4:memory:/x\n0::/\n"
	const mi = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
	for _, tc := range []struct {
		name, cgroup, mountinfo string
		mount, own              string
		wantErr                 bool
	}{
		{"hybrid, root cgroup", hybrid, "30 1 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n" + mi, "/sys/fs/cgroup/unified", "/", false},
		{"unified, service", "0::/system.slice/tq.service\n", "25 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup", "/system.slice/tq.service", false},
		{"mount root below the hierarchy root", "0::/a/b/c\n", "25 1 0:26 /a/b /mnt/c\\040g rw - cgroup2 none rw\n", "/mnt/c g", "/c", false},
		{"mount root elsewhere", "0::/a/b\n", "25 1 0:26 /x /mnt/cg rw - cgroup2 none rw\n", "", "", true},
		{"prefix of a name is not a parent", "0::/ab\n", "25 1 0:26 /a /mnt/cg rw - cgroup2 none rw\n", "", "", true},
		{"no cgroup2 line", "1:cpu:/\n", mi, "", "", true},
		{"deleted cgroup", "0::/gone (deleted)\n", mi, "", "", true},
		{"no cgroup2 mount", "0::/\n", "30 1 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mount, own, err := parseOwnCgroup([]byte(tc.cgroup), []byte(tc.mountinfo))
			if (err != nil) != tc.wantErr || mount != tc.mount || own != tc.own {
				t.Errorf("= %q, %q, %v; want %q, %q, error %v", mount, own, err, tc.mount, tc.own, tc.wantErr)
			}
		})
	}
}
