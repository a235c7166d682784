package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type keysPage struct {
	Keys []string `json:"keys"`
	Next string   `json:"next"`
}

// listKeys sends GET /v1/ns/test/kv with q and decodes the page. The raw
// body is checked too: "keys" is a list, never null.
func listKeys(t *testing.T, d *daemon, q url.Values) keysPage {
	t.Helper()
	b := mustCall(t, 200, "GET", d.url("/v1/ns/test/kv?"+q.Encode()), nil)
	var p keysPage
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if p.Keys == nil {
		t.Fatalf("?%s: keys is not a list: %s", q.Encode(), b)
	}
	return p
}

// walkKeys follows next from after until a page says "" and returns every
// key listed and the size of each page.
func walkKeys(t *testing.T, d *daemon, prefix, after string, limit int) (keys []string, pages []int) {
	t.Helper()
	for range 1000 {
		q := url.Values{"prefix": {prefix}, "limit": {fmt.Sprint(limit)}}
		if after != "" {
			q.Set("after", after)
		}
		p := listKeys(t, d, q)
		keys, pages = append(keys, p.Keys...), append(pages, len(p.Keys))
		if p.Next == "" {
			return keys, pages
		}
		if len(p.Keys) != limit || p.Next != p.Keys[len(p.Keys)-1] {
			t.Fatalf("page ?%s: %d keys, next %q; a page with a next must be full and end at next", q.Encode(), len(p.Keys), p.Next)
		}
		after = p.Next
	}
	t.Fatalf("no last page after 1000 pages")
	return nil, nil
}

// TestKeyListingPages walks GET /v1/ns/{ns}/kv?prefix=&limit=&after= page
// by page and checks the documented contract (README, "HTTP API"): keys in
// byte order, every page but the last full and ending at its "next", the
// last with next "", limit 1..10000 (default 1000), anything else 400.
func TestKeyListingPages(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"), "--no-sync")

	// 1003 keys under p/ (the default page is 1000), some needing escapes
	// in a query, and keys on both sides of the prefix that must not show.
	var want []string
	for i := range 1000 {
		want = append(want, fmt.Sprintf("p/%04d", i))
	}
	want = append(want, "p/a b&c=d", "p/plus+sign", "p/é")
	outside := []string{"o/1", "p", "q/1", "p0"}
	all := append(slices.Clone(want), outside...)
	all = append(all, "p/deleted")
	parallel(t, len(all), 16, func(i int) error {
		code, err := do("PUT", d.url("/v1/ns/test/kv/"+url.PathEscape(all[i])), []byte("v"))
		return expect(code, err, 204, "put "+all[i])
	})
	mustCall(t, 204, "DELETE", d.url("/v1/ns/test/kv/p%2Fdeleted"), nil)
	slices.Sort(want) // byte order: "p/0999" < "p/a b&c=d" < "p/plus+sign" < "p/é"

	t.Run("pages", func(t *testing.T) {
		for _, limit := range []int{7, 17, 1003, 10000} {
			got, pages := walkKeys(t, d, "p/", "", limit)
			if !slices.Equal(got, want) {
				t.Fatalf("limit %d: the pages list %d keys, want %d; first difference at %d", limit, len(got), len(want), firstDiff(got, want))
			}
			wantPages := (len(want) + limit - 1) / limit
			if len(pages) != wantPages {
				t.Fatalf("limit %d: %d pages %v, want %d (a full last page has next \"\", no empty page after it)", limit, len(pages), pages, wantPages)
			}
		}
	})

	t.Run("default limit", func(t *testing.T) {
		p := listKeys(t, d, url.Values{"prefix": {"p/"}})
		if len(p.Keys) != 1000 || p.Next != want[999] {
			t.Fatalf("no limit: %d keys, next %q; want 1000 and %q", len(p.Keys), p.Next, want[999])
		}
		rest := listKeys(t, d, url.Values{"prefix": {"p/"}, "after": {p.Next}})
		if !slices.Equal(rest.Keys, want[1000:]) || rest.Next != "" {
			t.Fatalf("second default page: %q next %q, want %q and \"\"", rest.Keys, rest.Next, want[1000:])
		}
	})

	t.Run("after", func(t *testing.T) {
		for _, tc := range []struct {
			name, prefix, after string
			want                []string
		}{
			{"beyond the end", "p/", "p/\xff", nil},
			{"the last key", "p/", want[len(want)-1], nil},
			{"beyond every key", "", "zzz", nil},
			{"between two keys", "p/", "p/0997x", want[998:]},
			{"before the prefix", "p/", "a", want},
			{"no prefix", "", "p/é", []string{"p0", "q/1"}},
		} {
			got, _ := walkKeys(t, d, tc.prefix, tc.after, 500)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s: prefix %q after %q lists %d keys %q..., want %d", tc.name, tc.prefix, tc.after, len(got), head(got), len(tc.want))
			}
		}
		p := listKeys(t, d, url.Values{"prefix": {"p/"}, "after": {"p/\xff"}, "limit": {"5"}})
		if len(p.Keys) != 0 || p.Next != "" {
			t.Fatalf("after the end: %+v, want no keys and next \"\"", p)
		}
	})

	t.Run("cli", func(t *testing.T) {
		// mycel keys asks for pages of at most 1000 and follows next.
		for _, tc := range []struct {
			args []string
			want []string
		}{
			{[]string{"--prefix", "p/"}, want},
			{[]string{"--prefix", "p/", "--limit", "1001"}, want[:1001]},
			{[]string{"--prefix", "p/", "--after", "p/0996", "--limit", "2"}, want[997:999]},
		} {
			out, code := mycel(t, d, "", append([]string{"keys", "-n", "test"}, tc.args...)...)
			if got := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); code != 0 || !slices.Equal(got, tc.want) {
				t.Errorf("mycel keys %v: exit %d, %d lines %q..., want %d", tc.args, code, len(got), head(got), len(tc.want))
			}
		}
	})

	t.Run("bad limit", func(t *testing.T) {
		for _, limit := range []string{"0", "-1", "-10000", "abc", "1.5", "1e3", "10001", "99999999999999999999", " 5"} {
			code, body, hdr := call(t, "GET", d.url("/v1/ns/test/kv?limit="+url.QueryEscape(limit)), nil)
			var e map[string]string
			if code != 400 || hdr.Get("Content-Type") != "application/json" || json.Unmarshal(body, &e) != nil || !strings.Contains(e["error"], "limit must be an integer in 1..10000") {
				t.Errorf("limit=%q: %d %s, want 400 with a JSON error naming 1..10000", limit, code, body)
			}
		}
	})
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func head(s []string) []string { return s[:min(len(s), 3)] }
