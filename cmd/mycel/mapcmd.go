package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/mycelnet/mycel/cmd/mycel/internal/api"
)

func mapCmd() *cobra.Command {
	c := &client{}
	var (
		path              []string
		put, add, flag    string
		setAdd, setRemove []string
		del               bool
	)
	cmd := clientCmd(c, "map KEY [FIELD]", "Print the map KEY's fields, or change FIELD with --put, --add, --set-add/--set-remove, --flag or --delete",
		`  mycel map user-1                          # one line a field: name, kind, value
  mycel map user-1 name --put Ada
  mycel map user-1 visits --add 1
  mycel map user-1 tags --set-add blue --set-remove red
  mycel map user-1 admin --flag=true
  mycel map user-1 city --path address --put Lyon   # the field city of the nested map address
  mycel map user-1 tags --delete`, rangeArgs(1, 2),
		func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			var ops []string
			for _, name := range []string{"put", "add", "flag"} {
				if fs.Changed(name) {
					ops = append(ops, "--"+name)
				}
			}
			if fs.Changed("delete") {
				if !del {
					return usageError{fmt.Errorf("map: --delete=false asks for nothing; leave it out")}
				}
				ops = append(ops, "--delete")
			}
			if len(setAdd) > 0 || len(setRemove) > 0 {
				ops = append(ops, "--set-add/--set-remove")
			}
			if len(args) == 1 {
				if len(ops) > 0 || len(path) > 0 {
					return usageError{fmt.Errorf("map: changing a map needs a FIELD after the KEY (without flags, map KEY prints it)")}
				}
				return printMap(cmd, c, args[0])
			}
			if len(ops) != 1 {
				return usageError{fmt.Errorf("map: a FIELD takes exactly one of --put, --add, --set-add/--set-remove, --flag, --delete (got %d)", len(ops))}
			}
			// JSON carries text: a name that is not UTF-8 would arrive
			// changed (U+FFFD), so refuse it here; a value that is not
			// goes as base64.
			for _, name := range append(append(append([]string{args[1]}, path...), setAdd...), setRemove...) {
				if !utf8.ValidString(name) {
					return usageError{fmt.Errorf("map: %s is not valid UTF-8", strconv.Quote(name))}
				}
			}
			body := map[string]any{"field": args[1]}
			if len(path) > 0 {
				body["path"] = path
			}
			switch {
			case fs.Changed("put") && !utf8.ValidString(put):
				body["put_base64"] = []byte(put)
			case fs.Changed("put"):
				body["put"] = put
			case fs.Changed("add"):
				n, err := strconv.ParseInt(add, 10, 64)
				if err != nil {
					return usageError{fmt.Errorf("map: --add wants an integer, got %q", add)}
				}
				body["add"] = n
			case fs.Changed("flag"):
				on, err := strconv.ParseBool(flag)
				if err != nil {
					return usageError{fmt.Errorf("map: --flag wants true or false, got %q", flag)}
				}
				body["flag"] = on
			case fs.Changed("delete"):
				body["delete"] = true
			default:
				body["set_add"], body["set_remove"] = nonNilStrings(setAdd), nonNilStrings(setRemove)
			}
			b, _ := json.Marshal(body)
			if _, _, err := c.do(cmd.Context(), http.MethodPost, c.nsPath("map", args[0]), nil, b, true); err != nil {
				return err
			}
			c.ok(cmd)
			return nil
		})
	fs := cmd.Flags()
	fs.StringArrayVar(&path, "path", nil, "nested map FIELD is in, outermost first (repeatable)")
	fs.StringVar(&put, "put", "", "write this text to the register FIELD")
	fs.StringVar(&add, "add", "", "add this to the counter FIELD (negative to subtract)")
	fs.StringArrayVar(&setAdd, "set-add", nil, "element to add to the set FIELD (repeatable)")
	fs.StringArrayVar(&setRemove, "set-remove", nil, "element to remove from the set FIELD (repeatable)")
	fs.StringVar(&flag, "flag", "", "enable (true) or disable (false) the flag FIELD")
	fs.BoolVar(&del, "delete", false, "remove FIELD (a concurrent write elsewhere survives)")
	return cmd
}

// printMap prints the map's fields: with --json as the API answers them,
// else a line a field and kind, "NAME<TAB>KIND<TAB>VALUE", nested fields
// named by their path joined with dots.
func printMap(cmd *cobra.Command, c *client, key string) error {
	var body struct {
		Fields map[string]*api.MapField `json:"fields"`
	}
	raw, err := c.getJSON(cmd.Context(), c.nsPath("map", key), nil, &body)
	if err != nil {
		return err
	}
	if c.json {
		_, err := cmd.OutOrStdout().Write(raw)
		return err
	}
	printFields(cmd.OutOrStdout(), "", body.Fields)
	return nil
}

func printFields(out io.Writer, prefix string, fields map[string]*api.MapField) {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, name := fields[n], prefix+shown(n, ".\t")
		switch {
		case f.Register != nil:
			fmt.Fprintf(out, "%s\tregister\t%s%s\n", name, shown(*f.Register, "\t"), siblingsNote(f.Siblings))
		case f.RegisterBase64 != nil:
			fmt.Fprintf(out, "%s\tregister\t%s%s\n", name, strconv.Quote(string(f.RegisterBase64)), siblingsNote(f.Siblings))
		}
		if f.Counter != nil {
			fmt.Fprintf(out, "%s\tcounter\t%d\n", name, *f.Counter)
		}
		if f.Set != nil {
			fmt.Fprintf(out, "%s\tset\t%s\n", name, joinShown(f.Set, ",\t"))
		}
		if f.Flag {
			fmt.Fprintf(out, "%s\tflag\ttrue\n", name)
		}
		if f.Map != nil {
			printFields(out, name+".", f.Map)
		}
	}
}

func siblingsNote(n int) string {
	if n > 1 {
		return fmt.Sprintf("\t(%d concurrent values)", n)
	}
	return ""
}
