package main

import (
	"bufio"
	"os"
)

func newStdout() *bufio.Writer { return bufio.NewWriterSize(os.Stdout, 64<<10) }
