// Package storetest damages a closed Pebble store on disk, for the tests
// that check how the store (and the node and daemon above it) report
// corruption. It owns nothing else and is imported only by tests.
package storetest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// Unrepeated is a value in which no run of four bytes repeats, so Pebble's
// block compression (Snappy) leaves it whole and a test finds it in an
// sstable's bytes.
const Unrepeated = "q7Zx9LmP2vT4wR8sK1nB6yH3cF5jD0gA"

// FlushAll has Pebble flush the closed Pebble database in dir into one
// sstable, so that its records sit in checksummed blocks, not the WAL, and
// returns the sstable's path and bytes.
func FlushAll(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return OnlySST(t, dir)
}

// OnlySST returns the path and bytes of the one sstable in dir.
func OnlySST(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(ssts) != 1 {
		t.Fatalf("want one sstable, found %v (%v)", ssts, err)
	}
	b, err := os.ReadFile(ssts[0])
	if err != nil {
		t.Fatal(err)
	}
	return ssts[0], b
}

// FlipAt flips a byte of the nth occurrence (from 0) of mark in the
// sstable at path, whose bytes are b, in place.
func FlipAt(t testing.TB, path string, b, mark []byte, nth int) {
	t.Helper()
	at := -1
	for i, from := 0, 0; i <= nth; i++ {
		j := bytes.Index(b[from:], mark)
		if j < 0 {
			t.Fatalf("occurrence %d of %q not in the sstable", nth, mark)
		}
		at, from = from+j, from+j+len(mark)
	}
	at += len(mark) / 2
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b[at] ^ 0x55}, int64(at)); err != nil {
		t.Fatal(err)
	}
}
