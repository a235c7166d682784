//go:build !unix

package store

func freeBytes(string) (uint64, error) { return 0, errSpaceUnknown }
