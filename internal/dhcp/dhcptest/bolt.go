// Package dhcptest holds what the lease store's unit tests and the e2e
// tests both do to a store on disk.
package dhcptest

import (
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// ZeroLeafPage zeroes the middle one of a bbolt file's leaf pages that hold
// more than ten records, as a bad disk or copy might (bbolt itself panics
// on such a page). It returns the page zeroed and all such leaf pages.
func ZeroLeafPage(path string) (page int, leaves []int, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return 0, nil, err
	}
	err = db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				return err
			}
			if p.Type == "leaf" && p.Count > 10 {
				leaves = append(leaves, id)
			}
		}
	})
	db.Close()
	if err != nil {
		return 0, nil, err
	}
	if len(leaves) == 0 {
		return 0, nil, fmt.Errorf("%s: no leaf page with more than ten records to zero", path)
	}
	page = leaves[len(leaves)/2]
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, os.Getpagesize()), int64(page*os.Getpagesize())); err != nil {
		return 0, nil, err
	}
	return page, leaves, nil
}
