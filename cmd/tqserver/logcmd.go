package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/store"
)

type logCmd struct {
	Check   logCheckCmd   `cmd:"" help:"Check var/tqserver.db page by page and record by record."`
	Salvage logSalvageCmd `cmd:"" help:"Copy every readable record of a damaged var/tqserver.db into a new log (the server must be stopped)."`
}

type logCheckCmd struct {
	rootFlag
}

func (c *logCheckCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	res, err := store.Check(layout.New(root, layout.Options{}).DB(), time.Second)
	if err != nil {
		return logFileError(root, err)
	}
	switch res.Records {
	case 0:
		fmt.Println("ok: 0 records")
	case 1:
		fmt.Printf("ok: 1 record, seq %d\n", res.First)
	default:
		fmt.Printf("ok: %d records, seq %d..%d\n", res.Records, res.First, res.Last)
	}
	return nil
}

type logSalvageCmd struct {
	rootFlag
}

func (c *logSalvageCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	path := layout.New(root, layout.Options{}).DB()
	res, err := store.Salvage(path, time.Now())
	if err != nil {
		return logFileError(root, err)
	}
	moved, err := filepath.Rel(root, res.Moved)
	if err != nil {
		moved = res.Moved
	}
	if res.LastSeq == 0 {
		// Not even a seq counter survived: numbering starts again.
		fmt.Printf("kept 0 records: nothing in the file was readable; the damaged file is now %s; the new log starts at seq 1\n", moved)
		return nil
	}
	fmt.Printf("kept %d records, lost %d (of seq 1..%d); the damaged file is now %s; the log continues at seq %d\n",
		res.Kept, res.Lost, res.LastSeq, moved, res.LastSeq+2)
	if res.Conflicts > 0 {
		fmt.Printf("%d seqs had two different copies; the later one was kept\n", res.Conflicts)
	}
	return nil
}

// logFileError turns the usual reasons a log cannot be read into one line
// that says what to do.
func logFileError(root string, err error) error {
	switch {
	case errors.Is(err, store.ErrLocked):
		return fmt.Errorf("%s is in use (a server runs on %s): stop it first", layout.DBFile, root)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("no log at %s (the server has never run on this root)", layout.New(root, layout.Options{}).DB())
	}
	return err
}
