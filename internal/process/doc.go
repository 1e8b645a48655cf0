// Package process starts, watches, signals and stops worker processes, and
// finds and stops orphans left behind by a crashed server.
//
// It owns everything that touches the OS process table for tqserver:
//
//   - Start runs one executable as the leader of its own process group
//     (group id = PID) with a parent-death signal, pipes its stdout/stderr
//     line by line into a zerolog.Logger (both at info, rate-limited per
//     process by Spec.Output) and keeps the last lines as a tail.
//   - Signal and Stop address the whole group. When the leader exits (on its
//     own or when stopped), the rest of its group is SIGKILLed while the
//     leader is still an unreaped zombie: the zombie holds the PID, so the
//     group id cannot have been reused by then. A worker's helper processes
//     therefore never outlive it (like systemd's KillMode=control-group).
//     Descendants that moved to another group or session are found through
//     the instance's cgroup (EnableCgroups) or, without one, through
//     Spec.Mark, which every descendant inherits in its environment
//     (MarkEnv); they are killed at the same moment. Without a mark they are
//     out of reach, and Done waits for their copy of the output pipes only
//     Spec.WaitDelay.
//   - ReapMarked finds a crashed server's instance's processes again by
//     mark and cgroup; EnableSubreaper makes the server reap the zombies of
//     descendants reparented to it, never a child os/exec waits for.
//   - StartTicks, Alive and Reap identify a process by PID plus start time
//     (field 22 of /proc/PID/stat), so a reused PID is never signalled.
//   - PortFree and FreePort pick loopback ports for new instances.
//
// EnableCgroups and EnableSubreaper change process-wide state (the
// package's cgroup directory, the prctl flag, a SIGCHLD watcher): the
// server calls them once at start.
//
// Concurrency: every exported function and method is safe for concurrent
// use. Each Process has one goroutine that waits for the leader, drains its
// output and then closes Done; Exit is valid once Done is closed. Output
// lines are logged from the goroutines that copy the pipes, so the Logger's
// writer must be safe for concurrent use (zerolog's writers are). FreePort
// keeps one package-wide round-robin cursor behind a mutex.
//
// Parent-death signals (Spec.ParentDeathSignal) are sent by Linux when the
// thread that forked the child exits. Go does not end its threads except
// when a goroutine exits while locked to one with runtime.LockOSThread, so
// Start must not be called from such a goroutine.
package process
