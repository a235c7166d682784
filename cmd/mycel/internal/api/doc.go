// Package api is the HTTP face of a Mycel daemon (DESIGN.md §7): it turns
// requests into calls on a *node.Node and node errors into status codes. It
// owns no state: a watch cursor is the node's persisted commit position of
// the change (node.Event.Position) and, inside a multi-key commit, the
// event's index in it, so a watch client resumes from its last cursor after
// a disconnect or a daemon restart (see watch.go).
//
// A request is checked completely (route, method, names, query, body,
// JSON, the operation against the limits) before its namespace is opened,
// because opening a namespace the node does not hold creates it (durably)
// and joins its replication: a refused request changes nothing. The API
// creates at most Options.MaxNamespaces namespaces (507 past it). A read of
// a namespace this process has just opened waits, up to
// Options.FirstSyncWait, for its first sync with the connected peers
// (node.Namespace.WaitFirstSync), so that it answers with what they hold.
//
// Routes (JSON unless noted; every error is {"error": "..."}, except a
// request Go's HTTP server refuses before any handler runs, such as a path
// with a malformed % escape):
//
//	PUT    /v1/ns/{ns}/kv/{key}        raw body → 204
//	GET    /v1/ns/{ns}/kv/{key}        200 raw value (X-Mycel-Siblings: N when N>1), ?all=1 → {"values":[base64...]}, 404
//	DELETE /v1/ns/{ns}/kv/{key}        204
//	GET    /v1/ns/{ns}/kv?prefix=&limit=&after=   {"keys":[...],"next":"..."}
//	POST   /v1/ns/{ns}/counter/{key}   {"add":n} → 204;   GET → {"value":n}
//	POST   /v1/ns/{ns}/set/{key}       {"add":[...],"remove":[...]} → 204;   GET → {"elements":[...]}
//	POST   /v1/ns/{ns}/map/{key}       {"field":F,"path":[...],<one of put, put_base64, add, set_add/set_remove, flag, delete>} → 204;   GET → {"fields":{...}}
//	GET    /v1/ns/{ns}/digest          {"digest":"<hex>","keys":n}
//	GET    /v1/ns/{ns}/watch?prefix=&from=        text/event-stream
//	GET    /v1/status, /healthz, /metrics (and /debug/pprof/ with Options.Pprof)
//
// Keys are everything after kv/, counter/, set/ or map/, percent-decoded, so a
// key may contain '/' (escaped or not). Handlers are safe for concurrent
// use; a write handler returns only after node's write has returned, which
// by default means the write is durable.
package api
