package crdt

import (
	"flag"
	"os"
	"testing"
)

// propChecks is how many cases each rapid property runs unless
// -rapid.checks is given on the command line: enough to make the CRDT laws
// meaningful in CI while the package stays fast under -race.
const propChecks = "1000"

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "rapid.checks" {
			explicit = true
		}
	})
	if !explicit && flag.Lookup("rapid.checks") != nil {
		if err := flag.Set("rapid.checks", propChecks); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
