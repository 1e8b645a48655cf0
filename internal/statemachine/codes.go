package statemachine

// Start is the event of an instance's first record (from "" to Starting):
// the instance exists, its process not yet. It is not in the table; New
// creates a machine in Starting.
const Start = "start"

// Reasons: why a transition happened (CONTRACT.md §4), the "reason" field
// of history records.
const (
	ReasonStartup          = "startup"
	ReasonBinaryChanged    = "binary_changed"
	ReasonSourceChanged    = "source_changed"
	ReasonConfigChanged    = "config_changed"
	ReasonCrashed          = "crashed"
	ReasonHealthFailed     = "health_failed"
	ReasonMaxRequests      = "max_requests"
	ReasonReplaced         = "replaced"
	ReasonRollback         = "rollback"
	ReasonShutdown         = "shutdown"
	ReasonOrphanReaped     = "orphan_reaped"
	ReasonOperator         = "operator"
	ReasonChecksumMismatch = "checksum_mismatch"
	ReasonServerUpgrade    = "server_upgrade"
)

// Record events that are no transition: about the server itself (no worker,
// no instance) or about a worker (builds, rejected binaries, assets).
const (
	EventServerStart          = "server_start"
	EventServerStop           = "server_stop"
	EventConfigReloaded       = "config_reloaded"
	EventConfigRejected       = "config_rejected"
	EventAssetsChanged        = "assets_changed"
	EventBinaryRejected       = "binary_rejected"
	EventServerUpgradePending = "server_upgrade_pending"
	// EventServerUpgrade: this server hands over to a new binary (CONTRACT.md §5, §11).
	EventServerUpgrade = "server_upgrade"
	// EventServerUpgradeFailed: a self-upgrade whose new binary did not
	// become ready; the old server keeps serving (reason rollback).
	EventServerUpgradeFailed = "server_upgrade_failed"
	// EventAdopt: an instance a new server took over from the server it
	// replaced (reason server_upgrade), healthy → healthy or draining →
	// draining, with its pid and port.
	EventAdopt          = "adopt"
	EventBuildStarted   = "build_started"
	EventBuildOK        = "build_ok"
	EventBuildFailed    = "build_failed"
	EventPortsExhausted = "ports_exhausted"
	// EventLogRecreated is the server-level record a recreated log holds
	// after the records copied from the old file.
	EventLogRecreated = "log_recreated"
	// EventLogSalvaged is the record a salvaged log ends with.
	EventLogSalvaged = "log_salvaged"
	// Canary deploys (internal/core/canary.go): a worker-level record at
	// each step, with the figures that decided it.
	EventCanaryStarted  = "canary_started"
	EventCanaryPromoted = "canary_promoted"
	EventCanaryFailed   = "canary_failed"
)

// Reasons lists every reason code.
func Reasons() []string {
	return []string{ReasonStartup, ReasonBinaryChanged, ReasonSourceChanged, ReasonConfigChanged,
		ReasonCrashed, ReasonHealthFailed, ReasonMaxRequests, ReasonReplaced, ReasonRollback,
		ReasonShutdown, ReasonOrphanReaped, ReasonOperator, ReasonChecksumMismatch, ReasonServerUpgrade}
}

// ValidState reports whether s is one of States.
func ValidState(s string) bool {
	switch s {
	case Starting, Healthy, Draining, Stopped:
		return true
	}
	return false
}
