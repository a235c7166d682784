package api

import (
	"fmt"
	"net/http"
	"unicode/utf8"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// mapUpdateBody is one change to one field of a map: the field, under
// the nested maps named by path, and exactly one operation.
type mapUpdateBody struct {
	Path      []string `json:"path"`
	Field     string   `json:"field"`
	Put       *string  `json:"put"`        // a register field: text
	PutBase64 *[]byte  `json:"put_base64"` // a register field: bytes
	Add       *int64   `json:"add"`        // a counter field
	SetAdd    []string `json:"set_add"`    // a set field
	SetRemove []string `json:"set_remove"`
	Flag      *bool    `json:"flag"`   // a flag field
	Delete    bool     `json:"delete"` // remove the field (observed-remove)
}

const mapBodyForm = `body must be {"field": F, "path": [...], and one of "put": text, "put_base64": bytes, "add": n, "set_add"/"set_remove": [...], "flag": bool, "delete": true}`

// op returns the crdt operation the body asks for, or an error naming
// what is wrong with it.
func (b *mapUpdateBody) op(key string) (crdt.Op, error) {
	op := crdt.Op{Key: key, Path: append(append([]string(nil), b.Path...), b.Field)}
	n := 0
	if b.Put != nil {
		n++
		op.Kind, op.Value = crdt.OpPut, []byte(*b.Put)
	}
	if b.PutBase64 != nil {
		n++
		op.Kind, op.Value = crdt.OpPut, *b.PutBase64
	}
	if b.Add != nil {
		n++
		op.Kind, op.N = crdt.OpCounterAdd, *b.Add
	}
	if len(b.SetAdd) > 0 || len(b.SetRemove) > 0 {
		n++
		op.Kind, op.Add, op.Remove = crdt.OpSetUpdate, b.SetAdd, b.SetRemove
	}
	if b.Flag != nil {
		n++
		op.Kind, op.Enable = crdt.OpFlag, *b.Flag
	}
	if b.Delete {
		n++
		op.Kind = crdt.OpDelete
	}
	switch {
	case b.Field == "":
		return op, fmt.Errorf(`"field" is missing: %s`, mapBodyForm)
	case n == 0:
		return op, fmt.Errorf("no operation: %s", mapBodyForm)
	case n > 1:
		return op, fmt.Errorf("%d operations in one request, one allowed: %s", n, mapBodyForm)
	}
	return op, nil
}

func (s *Server) mapUpdate(w http.ResponseWriter, r *http.Request, rt nsRoute) func(*node.Namespace) {
	var body mapUpdateBody
	if !s.decodeJSON(w, r, &body) {
		return nil
	}
	op, err := body.op(rt.key)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil
	}
	if !s.validOp(w, op) {
		return nil
	}
	return func(ns *node.Namespace) {
		if _, err := ns.Apply(r.Context(), op); err != nil {
			writeNodeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// MapField is one field of a map as the API shows it (GET map/{key}, watch
// events; mycel map reads it too): every kind the field holds (concurrent
// writes of different kinds are all kept).
type MapField struct {
	// Register is the winning write as text, if it is valid UTF-8;
	// otherwise RegisterBase64 holds its bytes.
	Register       *string              `json:"register,omitempty"`
	RegisterBase64 []byte               `json:"register_base64,omitempty"`
	Siblings       int                  `json:"siblings,omitempty"` // concurrent writes held, when more than one
	Counter        *int64               `json:"counter,omitempty"`
	Set            []string             `json:"set,omitempty"`
	Flag           bool                 `json:"flag,omitempty"`
	Map            map[string]*MapField `json:"map,omitempty"`
}

func showMap(v crdt.Value) map[string]*MapField {
	out := make(map[string]*MapField)
	for _, name := range v.Fields() {
		fv, _ := v.Field(name)
		k := fv.Kinds()
		if k == 0 {
			continue
		}
		f := &MapField{}
		if val, siblings, ok := fv.Register(); ok {
			if utf8.Valid(val) {
				t := string(val)
				f.Register = &t
			} else {
				f.RegisterBase64 = val
			}
			if siblings > 1 {
				f.Siblings = siblings
			}
		}
		if k&crdt.KindCounter != 0 {
			n := fv.Counter()
			f.Counter = &n
		}
		if k&crdt.KindSet != 0 {
			f.Set = fv.SetElements()
		}
		f.Flag = fv.Flag()
		if k&crdt.KindMap != 0 {
			f.Map = showMap(fv)
		}
		out[name] = f
	}
	return out
}

func (s *Server) mapGet(w http.ResponseWriter, r *http.Request, ns *node.Namespace, key string) {
	// An absent key reads as an empty map, as an absent counter reads 0
	// and an absent set reads empty.
	v, _ := ns.Map(key).Value()
	if k := v.Kinds(); k != 0 && k&crdt.KindMap == 0 {
		writeNodeError(w, fmt.Errorf("%w: %q holds a %s", node.ErrWrongType, key, v.Kinds()))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"fields": showMap(v)})
}
