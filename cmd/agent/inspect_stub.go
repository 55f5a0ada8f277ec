package main

import (
	"context"
	"errors"
	"io"
)

func runInspect(context.Context, []string, io.Writer, io.Writer) error {
	return errors.New("inspect: pending")
}
