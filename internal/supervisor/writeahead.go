package supervisor

// What the loop does when the log cannot be written (read-only or full
// var/, a damaged disk): an effect whose record failed is skipped, loudly,
// and retried where that makes sense — except during shutdown, when the
// record is given up on and the workers are stopped anyway.

// The messages of a failed append, as logged at error level by record.
const (
	msgEffectSkipped      = "could not record; effect skipped"
	msgShutdownUnrecorded = "could not record during shutdown; stopping anyway (this record is lost)"
)
