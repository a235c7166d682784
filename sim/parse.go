package sim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// ParseScenario reads a scenario from YAML. Keys are the Scenario fields'
// yaml names; durations are strings such as "40ms" or "2m". Unknown keys,
// wrong types and every problem Validate finds are errors naming the line.
//
//	name: three-regions
//	regions:
//	  - {name: us, nodes: 3, latency: 2ms}
//	  - {name: eu, nodes: 3, latency: 2ms}
//	links:
//	  - {a: us, b: eu, latency: 40ms, jitter: 5ms, loss: 1}
//	workload: {rate: 20, duration: 40s, keys: 5}
//	faults:
//	  - {at: 10s, kind: partition, groups: [[us], [eu]]}
//	  - {at: 25s, kind: heal}
//	expect: {converge_within: 30s, p99_propagation_ms: 20000}
func ParseScenario(data []byte) (Scenario, error) {
	var sc Scenario
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&sc); err != nil {
		if errors.Is(err, io.EOF) {
			return sc, fmt.Errorf("%w: empty file", ErrScenario)
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			// One line per problem from yaml: keep them on one line.
			msgs := make([]string, len(te.Errors))
			for i, m := range te.Errors {
				msgs[i] = withHint(m)
			}
			return sc, fmt.Errorf("%w: %s", ErrScenario, strings.Join(msgs, "; "))
		}
		return sc, fmt.Errorf("%w: %v", ErrScenario, err)
	}
	if err := sc.Validate(); err != nil {
		var se *ScenarioError
		if errors.As(err, &se) {
			var root yaml.Node
			if yaml.Unmarshal(data, &root) == nil {
				se.Line = lineOf(&root, se.Path)
			}
		}
		return sc, err
	}
	return sc, nil
}

// withHint adds to one of yaml's messages what the author most likely
// meant: every key is spelled with underscores (keep_disk, converge_within),
// and a duration needs its unit.
func withHint(msg string) string {
	if _, rest, ok := strings.Cut(msg, "field "); ok {
		if key, _, ok := strings.Cut(rest, " not found"); ok && strings.Contains(key, "-") {
			if alt := strings.ReplaceAll(key, "-", "_"); scenarioKeys()[alt] {
				return msg + " (keys use underscores: " + alt + ")"
			}
		}
	}
	if strings.HasSuffix(msg, "into time.Duration") {
		return msg + " (a duration needs its unit, such as 40ms or 10s)"
	}
	return msg
}

// LoadScenario reads and parses a scenario file.
func LoadScenario(path string) (Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("sim: %w", err)
	}
	sc, err := ParseScenario(data)
	if err != nil {
		return sc, fmt.Errorf("%s: %w", path, err)
	}
	return sc, nil
}

// lineOf follows path (mapping keys and sequence indexes) from the document
// root as far as it exists and returns that node's line.
func lineOf(root *yaml.Node, path []any) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		next := child(n, p)
		if next == nil {
			break
		}
		n, line = next, next.Line
	}
	return line
}

func child(n *yaml.Node, p any) *yaml.Node {
	switch p := p.(type) {
	case string:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == p {
				return n.Content[i+1]
			}
		}
	case int:
		if n.Kind == yaml.SequenceNode && p >= 0 && p < len(n.Content) {
			return n.Content[p]
		}
	}
	return nil
}

// UnmarshalYAML reads a fault strictly, as the rest of the file is read
// (yaml.v3 does not carry KnownFields into a custom unmarshaler), and
// takes keep-disk, as the scenario format spells it, for keep_disk.
func (f *Fault) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		known := faultKeys()
		seen := make(map[string]int)
		var problems []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Value == "keep-disk" {
				k.Value = "keep_disk"
			}
			if !known[k.Value] {
				problems = append(problems, fmt.Sprintf("line %d: field %s not found in type sim.Fault", k.Line, k.Value))
			}
			if line, dup := seen[k.Value]; dup {
				problems = append(problems, fmt.Sprintf("line %d: %s given twice (also on line %d; keep-disk and keep_disk are one key)", k.Line, k.Value, line))
			}
			seen[k.Value] = k.Line
		}
		if len(problems) > 0 {
			return &yaml.TypeError{Errors: problems}
		}
	}
	type plain Fault // without this method
	return n.Decode((*plain)(f))
}

// faultKeys is the set of a Fault's yaml keys.
func faultKeys() map[string]bool { return yamlKeys(reflect.TypeFor[Fault]()) }

// scenarioKeys is the set of every yaml key a scenario file may use.
func scenarioKeys() map[string]bool {
	out := make(map[string]bool)
	for _, t := range []reflect.Type{reflect.TypeFor[Scenario](), reflect.TypeFor[Region](), reflect.TypeFor[Link](),
		reflect.TypeFor[Workload](), reflect.TypeFor[Mix](), reflect.TypeFor[Nemesis](), reflect.TypeFor[Fault](), reflect.TypeFor[Expect]()} {
		for k := range yamlKeys(t) {
			out[k] = true
		}
	}
	return out
}

func yamlKeys(t reflect.Type) map[string]bool {
	out := make(map[string]bool, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}
