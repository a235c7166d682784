// Package api is the HTTP face of a Mycel daemon (DESIGN.md §7): it turns
// requests into calls on a *node.Node and node errors into status codes. It
// owns no replicated state; the one thing it keeps is a bounded, in-memory
// window of recent change events per watched namespace, so a watch client
// that reconnects during the same daemon run can resume from its last
// cursor.
//
// Routes (JSON unless noted; every error is {"error": "..."}):
//
//	PUT    /v1/ns/{ns}/kv/{key}        raw body → 204
//	GET    /v1/ns/{ns}/kv/{key}        200 raw value (X-Mycel-Siblings: N when N>1), ?all=1 → {"values":[base64...]}, 404
//	DELETE /v1/ns/{ns}/kv/{key}        204
//	GET    /v1/ns/{ns}/kv?prefix=&limit=&after=   {"keys":[...],"next":"..."}
//	POST   /v1/ns/{ns}/counter/{key}   {"add":n} → 204;   GET → {"value":n}
//	POST   /v1/ns/{ns}/set/{key}       {"add":[...],"remove":[...]} → 204;   GET → {"elements":[...]}
//	GET    /v1/ns/{ns}/digest          {"digest":"<hex>","keys":n}
//	GET    /v1/ns/{ns}/watch?prefix=&from=        text/event-stream
//	GET    /v1/status, /healthz, /metrics
//
// Keys are everything after kv/, counter/ or set/, percent-decoded, so a
// key may contain '/' (escaped or not). Handlers are safe for concurrent
// use; a write handler returns only after node's write has returned, which
// by default means the write is durable.
package api
