package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// chunkedReader reads a chunked body (RFC 9112 §7.1) strictly: chunk-size
// is 1 to 16 hex digits, extensions follow the grammar, every line ends in
// CRLF, chunk data is followed by exactly CRLF, and the trailer section is
// held to the header rules. Read returns chunk data; at io.EOF, trailer
// holds the trailer fields that may be passed on, as "name: value\r\n"
// lines. Any violation is a *framingError and the reader stays failed.
type chunkedReader struct {
	br      *bufio.Reader
	left    int64 // data left in the current chunk
	state   int
	err     error
	line    []byte // scratch for size and trailer lines
	trailer []byte
	excess  int64 // framing bytes beyond the allowance (see readSize)
	// block, when set, runs before a read that would wait for the peer
	// (nothing buffered): the forwarder flushes what it has written.
	block func()
}

const (
	chunkSize = iota // expecting a chunk-size line
	chunkData        // inside chunk data
	chunkDone        // read the whole body
)

// framingError is a body whose framing breaks the grammar.
type framingError struct{ msg string }

func (e *framingError) Error() string { return "malformed chunked body: " + e.msg }

func framing(format string, args ...any) error {
	return &framingError{msg: fmt.Sprintf(format, args...)}
}

// maxTrailer bounds a trailer section (net/http, behind most workers and
// clients, refuses one that does not end within its 4 KiB read buffer).
const maxTrailer = 4000

// maxExcess bounds the framing overhead a chunked body may carry beyond an
// allowance of 16 bytes per chunk plus twice its data, net/http's rule: a
// peer cannot make the engine read unbounded extensions for little data.
const maxExcess = 16 << 10

func (c *chunkedReader) reset(br *bufio.Reader) {
	*c = chunkedReader{br: br, line: c.line[:0], trailer: c.trailer[:0], block: c.block}
}

func (c *chunkedReader) mayBlock() {
	if c.block != nil && c.br.Buffered() == 0 {
		c.block()
	}
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	for {
		if c.err != nil {
			return 0, c.err
		}
		switch c.state {
		case chunkDone:
			return 0, io.EOF
		case chunkSize:
			c.mayBlock()
			if err := c.readSize(); err != nil {
				c.err = noEOF(err)
				return 0, c.err
			}
		case chunkData:
			if c.left == 0 {
				c.mayBlock()
				if err := c.readCRLF(); err != nil {
					c.err = noEOF(err)
					return 0, c.err
				}
				c.state = chunkSize
				continue
			}
			if len(p) == 0 {
				return 0, nil
			}
			if int64(len(p)) > c.left {
				p = p[:c.left]
			}
			c.mayBlock()
			n, err := c.br.Read(p)
			c.left -= int64(n)
			if err != nil && (c.left > 0 || err != io.EOF) {
				c.err = noEOF(err)
				return n, c.err
			}
			return n, nil
		}
	}
}

func (c *chunkedReader) readCRLF() error {
	b, err := c.br.Peek(2)
	if err != nil {
		if len(b) == 1 && b[0] != '\r' {
			return framing("chunk data not followed by CRLF")
		}
		return err
	}
	if b[0] != '\r' || b[1] != '\n' {
		return framing("chunk data not followed by CRLF")
	}
	c.br.Discard(2)
	return nil
}

func (c *chunkedReader) readSize() error {
	line, err := readLine(c.br, c.line[:0], maxChunkLine)
	c.line = line[:0]
	if err != nil {
		if err == errLineTooLong || err == errBareLF || err == errBareCR {
			return framing("chunk-size line: %v", err)
		}
		return err
	}
	n, i := int64(0), 0
	for ; i < len(line) && isHex(line[i]); i++ {
		if i == 16 || n > maxChunkSize>>4 {
			return framing("chunk size too large")
		}
		n = n<<4 | int64(unhex(line[i])) // cannot overflow: checked above
	}
	if i == 0 || n > maxChunkSize {
		return framing("chunk size %q", truncate(line))
	}
	c.excess = max(c.excess+int64(len(line))+2-16-2*n, 0) // as net/http counts it
	if c.excess > maxExcess {
		return framing("too much framing for the data it carries")
	}
	if err := checkChunkExt(line[i:]); err != nil {
		return err
	}
	if n > 0 {
		c.left, c.state = n, chunkData
		return nil
	}
	return c.readTrailer()
}

// checkChunkExt checks chunk extensions: *( BWS ";" BWS name [ BWS "="
// BWS ( token / quoted-string ) ] ), with no whitespace before the first
// ";" (net/http's reader, behind many workers, refuses it).
func checkChunkExt(b []byte) error {
	bad := func() error { return framing("chunk extension %q", truncate(b)) }
	i := 0
	ws := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
	}
	tok := func() bool {
		s := i
		for i < len(b) && byteClass[b[i]]&clsToken != 0 {
			i++
		}
		return i > s
	}
	for first := true; i < len(b); first = false {
		if !first {
			ws()
		}
		if i == len(b) || b[i] != ';' {
			return bad()
		}
		i++
		ws()
		if !tok() {
			return bad()
		}
		ws()
		if i < len(b) && b[i] == '=' {
			i++
			ws()
			if i < len(b) && b[i] == '"' {
				i++
				for {
					if i == len(b) {
						return bad()
					}
					c := b[i]
					if c == '"' {
						i++
						break
					}
					if c == '\\' {
						i++
						if i == len(b) || byteClass[b[i]]&clsValue == 0 {
							return bad()
						}
					} else if byteClass[c]&clsValue == 0 {
						return bad()
					}
					i++
				}
			} else if !tok() {
				return bad()
			}
		}
	}
	return nil
}

// readTrailer reads the trailer section after the last chunk, keeping the
// fields that may be passed on.
func (c *chunkedReader) readTrailer() error {
	total := 0
	for n := 0; ; n++ {
		line, err := readLine(c.br, c.line[:0], maxTrailer)
		c.line = line[:0]
		if err != nil {
			if err == errLineTooLong || err == errBareLF || err == errBareCR {
				return framing("trailer: %v", err)
			}
			return err
		}
		if len(line) == 0 {
			c.state = chunkDone
			return nil
		}
		if total += len(line) + 2; total > maxTrailer || n >= maxFields {
			return framing("trailer section too large")
		}
		f, err := parseField(line)
		if err != nil {
			return framing("trailer: %v", err)
		}
		if framingOnly(f.k) {
			continue
		}
		c.trailer = appendField(c.trailer, f.k, f.v)
	}
}

func appendField(dst, k, v []byte) []byte {
	dst = append(dst, k...)
	dst = append(dst, ": "...)
	dst = append(dst, v...)
	return append(dst, "\r\n"...)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeChunk frames p as one chunk.
func writeChunk(bw *bufio.Writer, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
	bw.WriteString("\r\n")
	bw.Write(p)
	_, err := bw.WriteString("\r\n")
	return err
}

// writeLastChunk ends a chunked body with trailer (validated field lines).
func writeLastChunk(bw *bufio.Writer, trailer []byte) error {
	bw.WriteString("0\r\n")
	bw.Write(trailer)
	_, err := bw.WriteString("\r\n")
	return err
}

// isFraming reports whether err is a framing violation (as opposed to an
// I/O failure or the peer going away).
func isFraming(err error) bool {
	var fe *framingError
	return errors.As(err, &fe)
}
