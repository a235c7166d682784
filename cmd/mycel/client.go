package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf16"

	"github.com/spf13/cobra"
)

// client talks to a daemon's HTTP API.
type client struct {
	api, ns, tokenFile string
	json               bool
	timeout            time.Duration
	token              string
	http               *http.Client
}

func (c *client) bind(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&c.api, "api", envOr("MYCEL_API", "127.0.0.1:5080"), "daemon API address HOST:PORT (env MYCEL_API)")
	fs.StringVarP(&c.ns, "ns", "n", envOr("MYCEL_NS", "default"), "namespace (env MYCEL_NS)")
	fs.BoolVar(&c.json, "json", false, "print JSON for scripts")
	fs.StringVar(&c.tokenFile, "api-token-file", "", "file holding the API bearer token (or env MYCEL_API_TOKEN)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "request timeout (watch: none)")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (c *client) init() error {
	c.token = os.Getenv("MYCEL_API_TOKEN")
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return err
		}
		c.token = strings.TrimSpace(string(b))
	}
	// No overall timeout (a watch streams for as long as it runs), but a
	// daemon that accepts and never answers must not hang the command.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = time.Minute
	c.http = &http.Client{Transport: tr}
	return nil
}

func (c *client) url(path string, q url.Values) string {
	base := c.api
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := strings.TrimRight(base, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (c *client) nsPath(kind, key string) string {
	p := "/v1/ns/" + url.PathEscape(c.ns) + "/" + kind
	if key != "" {
		p += "/" + url.PathEscape(key)
	}
	return p
}

// apiError is an error answer from the daemon.
type apiError struct {
	code int
	msg  string
}

func (e apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.msg, e.code) }

// do sends a request and returns the body of a 2xx answer.
func (c *client) do(ctx context.Context, method, path string, q url.Values, body []byte, jsonBody bool) (*http.Response, []byte, error) {
	if c.http == nil {
		if err := c.init(); err != nil {
			return nil, nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if jsonBody {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if errors.Is(err, context.DeadlineExceeded) {
		// The request may have reached the daemon: a write may land.
		return nil, nil, fmt.Errorf("no answer from the daemon at %s in time (--timeout): the result is unknown, and a write may still be applied: %w", c.api, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the daemon at %s: %w", c.api, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return resp, nil, apiError{resp.StatusCode, e.Error}
	}
	return resp, b, nil
}

func (c *client) getJSON(ctx context.Context, path string, q url.Values, v any) ([]byte, error) {
	_, b, err := c.do(ctx, http.MethodGet, path, q, nil, false)
	if err != nil {
		return nil, err
	}
	return b, json.Unmarshal(b, v)
}

func (c *client) print(cmd *cobra.Command, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(cmd.OutOrStdout(), string(b))
}

// ok prints the answer to a write.
func (c *client) ok(cmd *cobra.Command) {
	if c.json {
		fmt.Fprintln(cmd.OutOrStdout(), `{"ok": true}`)
	}
}

func clientCmd(c *client, use, short, example string, args cobra.PositionalArgs, run func(cmd *cobra.Command, args []string) error) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Example: example, Args: args, RunE: run}
	c.bind(cmd)
	return cmd
}

func clientCmds() []*cobra.Command {
	return []*cobra.Command{putCmd(), getCmd(), delCmd(), keysCmd(), counterCmd(), setCmd(), mapCmd(), digestCmd(), watchCmd(), statusCmd(), peersCmd()}
}

func putCmd() *cobra.Command {
	c := &client{}
	return clientCmd(c, "put KEY [VALUE]", "Write VALUE (or standard input) to the register KEY",
		`  mycel put greeting hello
  mycel put -n inventory sku-1 42
  mycel put photo < photo.jpg`, rangeArgs(1, 2),
		func(cmd *cobra.Command, args []string) error {
			var val []byte
			if len(args) == 2 {
				val = []byte(args[1])
			} else {
				var err error
				if val, err = io.ReadAll(cmd.InOrStdin()); err != nil {
					return err
				}
			}
			if _, _, err := c.do(cmd.Context(), http.MethodPut, c.nsPath("kv", args[0]), nil, val, false); err != nil {
				return err
			}
			c.ok(cmd)
			return nil
		})
}

func getCmd() *cobra.Command {
	c := &client{}
	var all bool
	cmd := clientCmd(c, "get KEY", "Print the value of the register KEY",
		`  mycel get greeting
  mycel get greeting --all      # every concurrent value (siblings)
  mycel get greeting --json     # {"key": ..., "value_base64": ..., "siblings": n}`, rangeArgs(1, 1),
		func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if all {
				var body struct {
					Values [][]byte `json:"values"`
				}
				if _, err := c.getJSON(cmd.Context(), c.nsPath("kv", args[0]), url.Values{"all": {"1"}}, &body); err != nil {
					return err
				}
				if c.json {
					c.print(cmd, body)
					return nil
				}
				for _, v := range body.Values {
					fmt.Fprintf(out, "%s\n", v)
				}
				return nil
			}
			resp, b, err := c.do(cmd.Context(), http.MethodGet, c.nsPath("kv", args[0]), nil, nil, false)
			if err != nil {
				return err
			}
			siblings := 1
			if s := resp.Header.Get("X-Mycel-Siblings"); s != "" {
				siblings, _ = strconv.Atoi(s)
			}
			if c.json {
				c.print(cmd, map[string]any{"key": args[0], "value_base64": base64.StdEncoding.EncodeToString(b), "siblings": siblings})
				return nil
			}
			_, _ = out.Write(b)
			if len(b) > 0 && b[len(b)-1] != '\n' && isTerminal(out) {
				fmt.Fprintln(out)
			}
			if siblings > 1 {
				fmt.Fprintf(cmd.ErrOrStderr(), "(%d concurrent values; see --all)\n", siblings)
			}
			return nil
		})
	cmd.Flags().BoolVar(&all, "all", false, "print every concurrent value")
	return cmd
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func delCmd() *cobra.Command {
	c := &client{}
	return clientCmd(c, "del KEY", "Delete KEY (a concurrent write elsewhere survives)",
		`  mycel del greeting`, rangeArgs(1, 1),
		func(cmd *cobra.Command, args []string) error {
			if _, _, err := c.do(cmd.Context(), http.MethodDelete, c.nsPath("kv", args[0]), nil, nil, false); err != nil {
				return err
			}
			c.ok(cmd)
			return nil
		})
}

func keysCmd() *cobra.Command {
	c := &client{}
	var prefix, after string
	var limit int
	cmd := clientCmd(c, "keys", "List keys, in order",
		`  mycel keys
  mycel keys --prefix user/ --limit 100
  mycel keys --json | jq -r '.keys[]'`, noArgs,
		func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageError{fmt.Errorf("--limit %d: want 0 (all) or more", limit)}
			}
			var all []string
			for {
				q := url.Values{"prefix": {prefix}}
				if after != "" {
					q.Set("after", after)
				}
				page := 1000
				if limit > 0 && limit-len(all) < page {
					page = limit - len(all)
				}
				q.Set("limit", strconv.Itoa(page))
				var body struct {
					Keys []string `json:"keys"`
					Next string   `json:"next"`
				}
				if _, err := c.getJSON(cmd.Context(), c.nsPath("kv", ""), q, &body); err != nil {
					return err
				}
				all = append(all, body.Keys...)
				if body.Next == "" || (limit > 0 && len(all) >= limit) {
					break
				}
				after = body.Next
			}
			if c.json {
				c.print(cmd, map[string][]string{"keys": nonNilStrings(all)})
				return nil
			}
			for _, k := range all {
				fmt.Fprintln(cmd.OutOrStdout(), shown(k, ""))
			}
			return nil
		})
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys with this prefix")
	cmd.Flags().StringVar(&after, "after", "", "only keys after this one")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many keys (0: all)")
	return cmd
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func counterCmd() *cobra.Command {
	c := &client{}
	var add int64
	cmd := clientCmd(c, "counter KEY", "Print the counter KEY, or add to it with --add",
		`  mycel counter visits
  mycel counter visits --add 1
  mycel counter visits --add=-3`, rangeArgs(1, 1),
		func(cmd *cobra.Command, args []string) error {
			path := c.nsPath("counter", args[0])
			if cmd.Flags().Changed("add") {
				b, _ := json.Marshal(map[string]int64{"add": add})
				if _, _, err := c.do(cmd.Context(), http.MethodPost, path, nil, b, true); err != nil {
					return err
				}
				c.ok(cmd)
				return nil
			}
			var body struct {
				Value int64 `json:"value"`
			}
			if _, err := c.getJSON(cmd.Context(), path, nil, &body); err != nil {
				return err
			}
			if c.json {
				c.print(cmd, body)
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), body.Value)
			}
			return nil
		})
	cmd.Flags().Int64Var(&add, "add", 0, "add this (negative to subtract)")
	return cmd
}

func setCmd() *cobra.Command {
	c := &client{}
	var add, remove []string
	cmd := clientCmd(c, "set KEY", "Print the set KEY's elements, or change them with --add/--remove",
		`  mycel set tags
  mycel set tags --add blue --add red
  mycel set tags --remove red`, rangeArgs(1, 1),
		func(cmd *cobra.Command, args []string) error {
			path := c.nsPath("set", args[0])
			if len(add) > 0 || len(remove) > 0 {
				b, _ := json.Marshal(map[string][]string{"add": nonNilStrings(add), "remove": nonNilStrings(remove)})
				if _, _, err := c.do(cmd.Context(), http.MethodPost, path, nil, b, true); err != nil {
					return err
				}
				c.ok(cmd)
				return nil
			}
			var body struct {
				Elements []string `json:"elements"`
			}
			if _, err := c.getJSON(cmd.Context(), path, nil, &body); err != nil {
				return err
			}
			if c.json {
				c.print(cmd, body)
				return nil
			}
			for _, e := range body.Elements {
				fmt.Fprintln(cmd.OutOrStdout(), shown(e, ""))
			}
			return nil
		})
	cmd.Flags().StringArrayVar(&add, "add", nil, "element to add (repeatable)")
	cmd.Flags().StringArrayVar(&remove, "remove", nil, "element to remove (repeatable)")
	return cmd
}

func digestCmd() *cobra.Command {
	c := &client{}
	return clientCmd(c, "digest", "Print the namespace digest: equal digests mean equal replicas",
		`  mycel digest -n inventory
  mycel digest --api 127.0.0.1:5081 --json`, noArgs,
		func(cmd *cobra.Command, _ []string) error {
			var body struct {
				Digest string `json:"digest"`
				Keys   int    `json:"keys"`
			}
			if _, err := c.getJSON(cmd.Context(), c.nsPath("digest", ""), nil, &body); err != nil {
				return err
			}
			if c.json {
				c.print(cmd, body)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %d keys\n", body.Digest, body.Keys)
			}
			return nil
		})
}

func watchCmd() *cobra.Command {
	c := &client{}
	var prefix, from string
	cmd := clientCmd(c, "watch", "Stream changes to keys (local and replicated) until interrupted",
		`  mycel watch
  mycel watch --prefix user/ --json      # one JSON event per line
  mycel watch --from <cursor>            # resume, also after a daemon restart`, noArgs,
		func(cmd *cobra.Command, _ []string) error {
			if err := c.init(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			q := url.Values{}
			if prefix != "" {
				q.Set("prefix", prefix)
			}
			if from != "" {
				q.Set("from", from)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(c.nsPath("watch", ""), q), nil)
			if err != nil {
				return err
			}
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := c.http.Do(req)
			if err != nil {
				return fmt.Errorf("cannot reach the daemon at %s: %w", c.api, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				var e struct {
					Error string `json:"error"`
				}
				_ = json.Unmarshal(b, &e)
				return apiError{resp.StatusCode, e.Error}
			}
			// The daemon sends a keep-alive every 15 s: silence for
			// much longer means it or the path is gone.
			body := newIdleReader(resp.Body, watchIdleTimeout, cancel)
			err = printEvents(ctx, body, cmd.OutOrStdout(), c.json)
			if body.idle() {
				return fmt.Errorf("nothing from the daemon at %s for %v (not even a keep-alive); resume with --from <the last cursor>", c.api, watchIdleTimeout)
			}
			return err
		})
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys with this prefix")
	cmd.Flags().StringVar(&from, "from", "", "resume after this cursor (an event's id, kept across daemon restarts)")
	return cmd
}

// watchIdleTimeout is how long a watch waits for any byte: three of the
// daemon's 15 s keep-alives.
const watchIdleTimeout = 45 * time.Second

// idleReader calls cancel when no Read has returned data for timeout.
type idleReader struct {
	r       io.Reader
	timeout time.Duration
	timer   *time.Timer
	fired   atomic.Bool
}

func newIdleReader(r io.Reader, timeout time.Duration, cancel func()) *idleReader {
	ir := &idleReader{r: r, timeout: timeout}
	ir.timer = time.AfterFunc(timeout, func() {
		ir.fired.Store(true)
		cancel()
	})
	return ir
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.timer.Reset(ir.timeout)
	}
	if err != nil {
		ir.timer.Stop()
	}
	return n, err
}

// idle reports whether the reader gave up for lack of data.
func (ir *idleReader) idle() bool { return ir.fired.Load() }

// shown is a key, element or namespace as the output for people prints it: as it is
// when that is unambiguous, else Go-quoted. Names may hold newlines, tabs
// and other control characters, which would split a line or forge one;
// one that starts with a quote, starts or ends with a space, or holds a
// character of special (the
// separators of where it is printed), is quoted too. --json prints names
// as they are.
func shown(s, special string) string {
	if s == "" || s[0] == '"' || s[0] == ' ' || s[len(s)-1] == ' ' || strings.ContainsAny(s, special) ||
		strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// joinShown joins names with ", ", each as shown prints it.
func joinShown(names []string, special string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = shown(n, special)
	}
	return strings.Join(out, ", ")
}

// printableJSON returns JSON text with every rune that is not printable
// written as a \u escape: the JSON encoder leaves C1 controls and
// direction marks (U+0085, U+009B, U+202E) raw, and on a terminal they can
// move the cursor or reorder a line. Outside strings compact JSON has no
// such runes, so the result is the same JSON.
func printableJSON(b []byte) string {
	var sb strings.Builder
	for _, r := range string(b) {
		switch {
		case unicode.IsPrint(r):
			sb.WriteRune(r)
		case r > 0xFFFF:
			hi, lo := utf16.EncodeRune(r)
			fmt.Fprintf(&sb, "\\u%04x\\u%04x", hi, lo)
		default:
			fmt.Fprintf(&sb, "\\u%04x", r)
		}
	}
	return sb.String()
}

// printEvents copies server-sent events to out, one line per change.
func printEvents(ctx context.Context, body io.Reader, out io.Writer, asJSON bool) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	event, id := "", ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			if event == "error" {
				var e struct {
					Error string `json:"error"`
				}
				_ = json.Unmarshal([]byte(data), &e)
				return errors.New(e.Error)
			}
			if asJSON {
				fmt.Fprintln(out, data)
				continue
			}
			line, err := watchLine([]byte(data))
			if err != nil {
				return fmt.Errorf("the daemon sent an event this client cannot read (%v): %.200q; resume after it with --from %s", err, data, id)
			}
			fmt.Fprintln(out, line)
		case line == "":
			event = ""
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the daemon closed the stream")
}

// watchLine is how mycel watch prints one event: cursor, key, kinds and
// what the key holds. A key holds more than one kind after concurrent
// writes of different kinds (a put on one node, a counter add on
// another): then each is shown, named, so the conflict is seen.
func watchLine(data []byte) (string, error) {
	var ev struct {
		Cursor, Key, Kinds string
		Deleted            bool
		Value              []byte
		Siblings           int
		Counter            *int64
		Elements           []string
		Fields             json.RawMessage
		Flag               *bool
		Truncated          bool
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return "", err
	}
	var what string
	switch {
	case ev.Deleted:
		what = "deleted"
	default:
		kinds := strings.Split(ev.Kinds, "|")
		parts := make([]string, 0, len(kinds)+1)
		for _, kind := range kinds {
			if ev.Truncated && kind != "counter" && kind != "flag" {
				continue // left out of the event; the counter and flag stay
			}
			var part string
			switch kind {
			case "register":
				part = strconv.Quote(string(ev.Value))
				if ev.Siblings > 1 { // every value held, the winner included
					part += fmt.Sprintf(" (+%d concurrent)", ev.Siblings-1)
				}
			case "counter":
				if ev.Counter == nil {
					continue
				}
				part = strconv.FormatInt(*ev.Counter, 10)
			case "set":
				part = "{" + joinShown(ev.Elements, ",{}") + "}"
			case "map":
				part = printableJSON(ev.Fields)
			case "flag":
				if ev.Flag == nil {
					continue
				}
				part = strconv.FormatBool(*ev.Flag)
			default:
				continue // a kind newer than this client
			}
			if len(kinds) > 1 {
				part = kind + "=" + part
			}
			parts = append(parts, part)
		}
		if ev.Truncated {
			parts = append(parts, "(too large to show here: read the key)")
		}
		what = strings.Join(parts, " ")
	}
	// Cursor and kinds come from the daemon too: quoted like names if a
	// daemon ever sent one that is not plain text.
	return fmt.Sprintf("%s\t%s\t%s\t%s", shown(ev.Cursor, "\t"), shown(ev.Key, ""), shown(ev.Kinds, "\t"), what), nil
}

type statusBody struct {
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs"`
	Peers  []struct {
		ID        string   `json:"id"`
		Addrs     []string `json:"addrs"`
		Connected bool     `json:"connected"`
		LastSync  *string  `json:"last_sync"`
	} `json:"peers"`
	Namespaces []string `json:"namespaces"`
}

func statusCmd() *cobra.Command {
	c := &client{}
	return clientCmd(c, "status", "Print the daemon's peer id, addresses, peers and namespaces",
		`  mycel status
  mycel status --json | jq -r .peer_id`, noArgs,
		func(cmd *cobra.Command, _ []string) error {
			var st statusBody
			raw, err := c.getJSON(cmd.Context(), "/v1/status", nil, &st)
			if err != nil {
				return err
			}
			if c.json {
				fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(raw)))
				return nil
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "peer id:    %s\n", st.PeerID)
			for _, a := range st.Addrs {
				fmt.Fprintf(out, "listen:     %s\n", a)
			}
			connected := 0
			for _, p := range st.Peers {
				if p.Connected {
					connected++
				}
			}
			fmt.Fprintf(out, "peers:      %d connected, %d known\n", connected, len(st.Peers))
			fmt.Fprintf(out, "namespaces: %s\n", joinShown(st.Namespaces, ","))
			return nil
		})
}

func peersCmd() *cobra.Command {
	c := &client{}
	return clientCmd(c, "peers", "List the peers the daemon knows, connected first",
		`  mycel peers
  mycel peers --json`, noArgs,
		func(cmd *cobra.Command, _ []string) error {
			var st statusBody
			if _, err := c.getJSON(cmd.Context(), "/v1/status", nil, &st); err != nil {
				return err
			}
			if c.json {
				c.print(cmd, map[string]any{"peers": st.Peers})
				return nil
			}
			out := cmd.OutOrStdout()
			for _, want := range []bool{true, false} {
				for _, p := range st.Peers {
					if p.Connected != want {
						continue
					}
					state := "disconnected"
					if p.Connected {
						state = "connected"
					}
					fmt.Fprintf(out, "%s  %-12s  %s\n", p.ID, state, strings.Join(p.Addrs, " "))
				}
			}
			return nil
		})
}
