package events

// Restart asks for a zero-downtime replacement of every instance of Worker,
// one at a time, with reason operator (POST /v1/workers/{name}/restart,
// `tqserver restart NAME`). Reply, when set, receives one result once every
// new instance serves or failed, like a Reload's.
type Restart struct {
	// Rollback: swap back to the saved previous good binary (reason
	// rollback) instead of restarting the one that runs.
	Rollback bool
	Worker   string
	Reply    chan<- ReloadResult
}

func (Restart) event() {}

// UnknownWorker starts ReloadResult.Error when a Restart names no worker
// the server runs (the admin API answers 404).
const UnknownWorker = "unknown worker"
