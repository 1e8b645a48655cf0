package store

import (
	"encoding/json"
	"errors"
	"math"
	"unicode/utf8"
)

// DecodeRecord parses one record as stored in the log or printed by
// `history --json`. It accepts exactly what encoding/json accepts for a
// Record (unknown fields are ignored, so a newer tqserver may add fields
// without a schema change), and additionally requires seq and time. It never
// panics; a truncated or corrupt value is an error.
func DecodeRecord(b []byte) (Record, error) {
	var d decoder
	var r Record
	err := d.decode(b, &r)
	return r, err
}

// decoder decodes records, the common shape without reflection: history
// reads millions of records, and encoding/json spends most of its time on
// reflection for a struct this flat. The fast path only accepts input
// it understands completely and hands everything else (escapes, unknown or
// case-folded keys, unusual numbers, errors) to encoding/json, so both agree
// on every input; FuzzDecodeRecord checks that.
type decoder struct {
	// strs interns the short strings that repeat across records (worker,
	// state, event and reason names), saving an allocation each. Nil: no
	// interning.
	strs map[string]string
}

// maxInterned bounds the intern table so a long scan cannot grow it without
// limit; instance names are mostly unique and stop being interned once full.
const maxInterned = 4096

func newScanDecoder() *decoder {
	return &decoder{strs: make(map[string]string, 64)}
}

// decode overwrites *r with the record in b; on error *r is unspecified.
// Filling the caller's record rather than returning one saves copying it
// around on the scan path.
func (d *decoder) decode(b []byte, r *Record) error {
	*r = Record{}
	if !d.fast(b, r) {
		var err error
		if *r, err = slowDecode(b); err != nil {
			return err
		}
	}
	if r.Seq == 0 {
		return errors.New("missing seq")
	}
	if r.Time.IsZero() {
		return errors.New("missing time")
	}
	return nil
}

// slowDecode is encoding/json, kept apart so the record it needs on the heap
// is not allocated for every record the fast path decodes.
func slowDecode(b []byte) (Record, error) {
	var r Record
	err := json.Unmarshal(b, &r)
	return r, err
}

// fast decodes b into the zero record r and reports whether it could. false
// means "not decided here", never "invalid".
func (d *decoder) fast(b []byte, r *Record) bool {
	p := parser{b: b}
	p.ws()
	if !p.eat('{') {
		return false
	}
	p.ws()
	if p.eat('}') {
		return p.end()
	}
	for {
		key, ok := p.key()
		if !ok {
			return false
		}
		p.ws()
		if !p.eat(':') {
			return false
		}
		p.ws()
		if !d.value(&p, key, r) {
			return false
		}
		p.ws()
		if p.eat(',') {
			p.ws()
			continue
		}
		if p.eat('}') {
			return p.end()
		}
		return false
	}
}

// value decodes the value of key into r.
func (d *decoder) value(p *parser, key []byte, r *Record) bool {
	if p.null() {
		switch string(key) {
		case "exit_code":
			r.ExitCode = nil
			return true
		case "seq", "time", "worker", "instance", "from", "to", "event", "reason",
			"pid", "port", "start_ticks", "signal", "detail", "route":
			// encoding/json leaves the field as it is.
			return true
		}
		return false
	}
	var ok bool
	switch string(key) {
	case "seq":
		r.Seq, ok = p.uint()
	case "time":
		var raw []byte
		if raw, _, ok = p.rawString(); ok {
			// The same call encoding/json makes with the same literal.
			ok = r.Time.UnmarshalJSON(raw) == nil
		}
	case "worker":
		r.Worker, ok = d.str(p, true)
	case "instance":
		r.Instance, ok = d.str(p, true)
	case "from":
		r.From, ok = d.str(p, true)
	case "to":
		r.To, ok = d.str(p, true)
	case "event":
		r.Event, ok = d.str(p, true)
	case "reason":
		r.Reason, ok = d.str(p, true)
	case "pid":
		r.PID, ok = p.int()
	case "port":
		r.Port, ok = p.int()
	case "start_ticks":
		r.StartTicks, ok = p.uint()
	case "exit_code":
		var n int
		if n, ok = p.int(); ok {
			r.ExitCode = &n
		}
	case "signal":
		r.Signal, ok = d.str(p, true)
	case "detail":
		r.Detail, ok = d.str(p, false)
	case "route":
		r.Route, ok = d.str(p, true)
	}
	return ok
}

// str reads a JSON string value. Strings with escapes are rare (a crash's
// stderr tail in detail) and go through encoding/json on their own.
func (d *decoder) str(p *parser, intern bool) (string, bool) {
	raw, escaped, ok := p.rawString()
	if !ok {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	if escaped {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	}
	if intern && d.strs != nil && len(body) <= 64 {
		if s, ok := d.strs[string(body)]; ok {
			return s, true
		}
		s := string(body)
		if len(d.strs) < maxInterned {
			d.strs[s] = s
		}
		return s, true
	}
	return string(body), true
}

// parser is a cursor over one JSON value.
type parser struct {
	b []byte
	i int
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only whitespace follows.
func (p *parser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

func (p *parser) null() bool {
	if len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

// key reads an object key made of plain ASCII without escapes.
func (p *parser) key() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			k := p.b[start:p.i]
			p.i++
			return k, true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// plain marks the bytes a string literal can hold without a closer look:
// not the quote, not a backslash, not a control character, not beyond ASCII.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// rawString returns a string literal with its quotes, and whether it holds
// escapes. It accepts what JSON allows (what an escape means is checked by
// whoever unquotes) except invalid UTF-8, which encoding/json would silently
// replace.
func (p *parser) rawString() (raw []byte, escaped, ok bool) {
	start := p.i
	if !p.eat('"') {
		return nil, false, false
	}
	ascii := true
	for p.i < len(p.b) {
		c := p.b[p.i]
		if plain[c] {
			p.i++
			continue
		}
		switch {
		case c == '"':
			p.i++
			raw = p.b[start:p.i]
			if !ascii && !utf8.Valid(raw) {
				return nil, false, false
			}
			return raw, escaped, true
		case c == '\\':
			// Skip the escaped byte so an escaped quote does not end the
			// string.
			escaped = true
			p.i += 2
			continue
		case c < 0x20:
			return nil, false, false
		}
		ascii = false
		p.i++
	}
	return nil, false, false
}

// digits returns a run of decimal digits without a leading zero, as JSON
// spells integers, provided no fraction or exponent follows.
func (p *parser) digits() ([]byte, bool) {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	d := p.b[start:p.i]
	if len(d) == 0 || (d[0] == '0' && len(d) > 1) {
		return nil, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	return d, true
}

func (p *parser) uint() (uint64, bool) {
	d, ok := p.digits()
	if !ok {
		return 0, false
	}
	var v uint64
	for _, c := range d {
		n := uint64(c - '0')
		if v > (math.MaxUint64-n)/10 {
			return 0, false
		}
		v = v*10 + n
	}
	return v, true
}

func (p *parser) int() (int, bool) {
	neg := p.eat('-')
	d, ok := p.digits()
	if !ok {
		return 0, false
	}
	limit := uint64(math.MaxInt)
	if neg {
		limit++
	}
	var v uint64
	for _, c := range d {
		n := uint64(c - '0')
		if v > (limit-n)/10 {
			return 0, false
		}
		v = v*10 + n
	}
	if neg {
		return int(-v), true
	}
	return int(v), true
}
