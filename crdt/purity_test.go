package crdt

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// purityImports is every package the non-test code of crdt may import. The
// package is a pure value library (see doc.go): anything that could start a
// goroutine, lock, read a clock, draw randomness or do I/O — sync,
// sync/atomic, time, math/rand, math/rand/v2, crypto/rand, os, io, net,
// syscall, unsafe, log, runtime, reflect, context — stays out. Widen this
// list only for packages that are pure in the same sense.
var purityImports = map[string]bool{
	"bytes":           true,
	"crypto/sha256":   true,
	"encoding/binary": true,
	"encoding/hex":    true,
	"errors":          true,
	"fmt":             true,
	"math":            true,
	"maps":            true,
	"math/bits":       true,
	"slices":          true,
	"sort":            true,
	"strings":         true,
	"unicode/utf8":    true,
	"google.golang.org/protobuf/encoding/protowire": true,
}

// purityCalls are functions that do I/O although their package is allowed
// (fmt's printing to stdout and reading stdin), and the builtins that write
// to stderr.
var purityCalls = map[string]bool{
	"fmt.Print": true, "fmt.Printf": true, "fmt.Println": true,
	"fmt.Scan": true, "fmt.Scanf": true, "fmt.Scanln": true,
	"print": true, "println": true,
}

func TestCRDTIsPure(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		problems, err := purityProblems(fset, name, src)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Error(p)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no non-test .go files found: is the test running in crdt/?")
	}
}

// purityProblems parses one file and returns, as "file:line: what", every
// import outside purityImports, every go statement, every use of channels
// and every call in purityCalls.
func purityProblems(fset *token.FileSet, name string, src []byte) ([]string, error) {
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var out []string
	report := func(n ast.Node, format string, args ...any) {
		pos := fset.Position(n.Pos())
		out = append(out, fmt.Sprintf("%s:%d: %s", pos.Filename, pos.Line, fmt.Sprintf(format, args...)))
	}
	// Local names of imported packages, to recognise fmt.Print etc.
	local := map[string]string{}
	for _, imp := range f.Imports {
		path, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			return nil, err
		}
		if !purityImports[path] {
			report(imp, "import %q is not allowed in the pure crdt package", path)
		}
		name := path[strings.LastIndex(path, "/")+1:]
		if imp.Name != nil {
			name = imp.Name.Name
		}
		local[name] = path
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			report(n, "go statement: crdt starts no goroutines")
		case *ast.ChanType:
			report(n, "channel type: crdt uses no channels")
		case *ast.SendStmt:
			report(n, "channel send: crdt uses no channels")
		case *ast.UnaryExpr:
			if n.Op == token.ARROW {
				report(n, "channel receive: crdt uses no channels")
			}
		case *ast.SelectStmt:
			report(n, "select statement: crdt uses no channels")
		case *ast.CallExpr:
			var callee string
			switch fn := n.Fun.(type) {
			case *ast.Ident:
				callee = fn.Name
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok && local[x.Name] != "" {
					callee = local[x.Name] + "." + fn.Sel.Name
				}
			}
			if purityCalls[callee] {
				report(n, "call of %s: crdt does no I/O", callee)
			}
		}
		return true
	})
	return out, nil
}

// The checker itself must catch what it is for, and name the line.
func TestPurityCheckerCatches(t *testing.T) {
	cases := map[string]string{
		`import "sync"`:                         `bad.go:2: import "sync"`,
		`import "sync/atomic"`:                  `bad.go:2: import "sync/atomic"`,
		`import "time"`:                         `bad.go:2: import "time"`,
		`import "math/rand"`:                    `bad.go:2: import "math/rand"`,
		`import "math/rand/v2"`:                 `bad.go:2: import "math/rand/v2"`,
		`import "crypto/rand"`:                  `bad.go:2: import "crypto/rand"`,
		`import "os"`:                           `bad.go:2: import "os"`,
		`import "io"`:                           `bad.go:2: import "io"`,
		`import "net/http"`:                     `bad.go:2: import "net/http"`,
		`import "syscall"`:                      `bad.go:2: import "syscall"`,
		`import _ "unsafe"`:                     `bad.go:2: import "unsafe"`,
		`import "log"`:                          `bad.go:2: import "log"`,
		`import "runtime"`:                      `bad.go:2: import "runtime"`,
		`import "reflect"`:                      `bad.go:2: import "reflect"`,
		`import "context"`:                      `bad.go:2: import "context"`,
		`import "C"`:                            `bad.go:2: import "C"`,
		"import (\n\t\"sort\"\n\tt \"time\"\n)": `bad.go:4: import "time"`,
		"func f() {\n\tgo f()\n}":               "bad.go:3: go statement",
		"var c chan int":                        "bad.go:2: channel type",
		"func f(c <-chan int) {}":               "bad.go:2: channel type",
		"func f() {\n\tc <- 1\n}":               "bad.go:3: channel send",
		"func f() int {\n\treturn <-c\n}":       "bad.go:3: channel receive",
		"func f() {\n\tselect {}\n}":            "bad.go:3: select statement",
		"import \"fmt\"\n\nfunc f() {\n\tfmt.Println()\n}": "bad.go:5: call of fmt.Println",
		"import f \"fmt\"\n\nfunc g() { f.Printf(\"\") }":  "bad.go:4: call of fmt.Printf",
		"func f() {\n\tprintln()\n}":                       "bad.go:3: call of println",
	}
	keys := make([]string, 0, len(cases))
	for src := range cases {
		keys = append(keys, src)
	}
	sort.Strings(keys)
	for _, src := range keys {
		problems, err := purityProblems(token.NewFileSet(), "bad.go", []byte("package crdt\n"+src+"\n"))
		if err != nil {
			t.Errorf("%q: %v", src, err)
			continue
		}
		if len(problems) != 1 || !strings.HasPrefix(problems[0], cases[src]) {
			t.Errorf("%q: got %q, want one problem starting %q", src, problems, cases[src])
		}
	}
	ok := "import (\n\t\"fmt\"\n\t\"sort\"\n\t\"google.golang.org/protobuf/encoding/protowire\"\n)\n\n" +
		"func f(b []byte) string { sort.Ints(nil); return fmt.Sprint(protowire.SizeVarint(1)) }\n"
	if problems, err := purityProblems(token.NewFileSet(), "ok.go", []byte("package crdt\n"+ok)); err != nil || len(problems) != 0 {
		t.Errorf("allowed source: problems %q, err %v", problems, err)
	}
}
