//! The OpenAPI 3.1 document of the node's API (`/openapi.json`): every route, its body and
//! answers, and which token scope it needs; the fuzzer (schemathesis) and the guard's and
//! auth's tests read it.

use serde_json::{Value as J, json};

use super::OPS_MAX;

/// The OpenAPI 3.1 description of this API.
/// The routes of a node served with `debug` (`--debug-api`), or without the `/debug` ones.
pub fn openapi_document(debug: bool) -> J {
    let mut doc = paths_document();
    if !debug && let Some(paths) = doc["paths"].as_object_mut() {
        paths.retain(|p, _| !p.starts_with("/debug/"));
    }
    // Every route answers 403 to another Host or a foreign Origin, and every POST 415 to a
    // body of another content type (`guard.rs`); every route but the two open ones needs a
    // token: 401 without a valid one, 403 when its scope is too small (`auth.rs`).
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                let m = axum::http::Method::from_bytes(method.to_uppercase().as_bytes())
                    .unwrap_or(axum::http::Method::GET);
                match crate::auth::needs(&m, path) {
                    Some(scope) => {
                        op["responses"]["401"] =
                            err("no valid token (missing, malformed, unknown, revoked or expired)");
                        op["responses"]["403"] = err(&format!(
                            "refused by the guard (see info.description), or the token's scope is below {scope}"
                        ));
                        op["x-scope"] = json!(scope.as_str());
                        op["responses"]["429"] = err(
                            "the token made more requests a second than the node allows (--token-rate); Retry-After says when to retry",
                        );
                    }
                    None => {
                        op["responses"]["403"] = err("refused by the guard (see info.description)");
                        op["security"] = json!([]);
                    }
                }
                if method == "post" {
                    op["responses"]["415"] = err("refused by the guard: the body's content type");
                    op["responses"]["413"] =
                        err("the body is larger than the route accepts (4 MiB; bundles 1 GiB)");
                }
            }
        }
    }
    doc["security"] = json!([{"bearer": []}]);
    doc["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer",
        "description": "A token from `lcloud token create` (scopes read < write < admin; each route's x-scope says which it needs). The node's first admin token is in its directory's admin.token."}});
    doc
}

/// The query parameters that name a cut or view (`/api/state`, `/api/root`), with `path`
/// first when `with_path`.
fn cut_params(with_path: bool) -> J {
    let text = |name: &str, what: &str| json!({"name": name, "in": "query", "required": false, "description": what, "schema": {"type": "string"}});
    let mut params = vec![
        text("at", "a vector clock, NODE:SEQ entries comma-separated"),
        text(
            "heads",
            "experience id prefixes, comma-separated: the cut they head",
        ),
        text("without", "a node whose ops are left out"),
        text(
            "seen_by",
            "NODE@SEQ: what that node had seen when it wrote that experience",
        ),
    ];
    if with_path {
        params.insert(0, json!({"name": "path", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$"}}));
    }
    J::Array(params)
}

/// The routes of [`openapi_document`], before the guard's answers are added to each.
fn paths_document() -> J {
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok_json = |desc: &str, schema: J| json!({"description": desc, "content": {"application/json": {"schema": schema}}});
    // An index into a list or text: what the node reads as a 64-bit count.
    let index = json!({"type": "integer", "minimum": 0, "maximum": 9223372036854775807i64});
    let log_row = json!({"type": "object", "required": ["id", "author", "seq", "depth", "deps", "ops", "fork", "rejected"], "properties": {
        "id": {"type": "string"}, "author": {"type": "string"}, "seq": {"type": "integer"}, "depth": {"type": "integer"},
        "deps": {"type": "array", "items": {"type": "string"}}, "ops": {"type": "array", "items": {"type": "string"}},
        "fork": {"type": "boolean"},
        "rejected": {"type": "array", "items": {"type": "object", "properties": {"op": {"type": "integer"}, "reason": {"type": "string"}, "text": {"type": "string"}}}}}});
    let mut contract_params = vec![
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        json!({"name": "key", "in": "query", "required": false, "schema": {"type": "string"}}),
    ];
    contract_params.extend(cut_params(false).as_array().cloned().unwrap_or_default());
    let mut conflicts_params = vec![
        json!({"name": "path", "in": "query", "required": true, "schema": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$"}}),
    ];
    conflicts_params.extend(cut_params(false).as_array().cloned().unwrap_or_default());
    let mut writes_params = vec![
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        json!({"name": "key", "in": "query", "required": true, "schema": {"type": "string"}}),
    ];
    writes_params.extend(cut_params(false).as_array().cloned().unwrap_or_default());
    let change = json!({"type": "object", "required": ["experience", "op", "author", "seq", "function", "value"], "properties": {
        "experience": {"type": "string"}, "op": {"type": "integer"},
        "author": {"type": ["string", "null"]}, "seq": {"type": ["integer", "null"]},
        "function": {"type": ["string", "null"], "description": "the function called (`init` for the deploy)"},
        "value": {"type": ["string", "null"], "description": "the value it left (null: removed)"}}});
    let writes = json!({"type": "object", "required": ["contract", "key", "value", "changes", "complete"], "properties": {
        "contract": {"type": "string"}, "key": {"type": "string"}, "value": {"type": ["string", "null"]},
        "changes": {"type": "array", "items": change, "description": "oldest first; the last one wrote `value`"},
        "complete": {"type": "boolean", "description": "whether `changes` reaches back to the deploy; else only the changes since the fold's last checkpoint at which the key held another value"}}});
    let log_page = json!({"type": "object", "required": ["log", "next"], "properties": {
        "log": {"type": "array", "items": log_row}, "next": {"type": ["string", "null"]}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "λCLOUD node API", "version": "1",
            "description": "Requests must name the node in Host (an IP address, localhost, or a name given with --api-host, with the API's port); a browser's Origin, when sent, must be the node's own; POST bodies must be application/json (bundles: application/octet-stream). Otherwise 403 or 415."},
        "paths": {
            "/api/state": {"get": {
                "summary": "The document at a path (JSON Pointer; empty: the whole document), now, or at the cut or view `at`, `heads`, `without` and `seen_by` name (as `lcloud state` takes them; nodes by alias or id prefix, experiences by id prefix): at a clock alone the node answers from its time-travel index and checkpoints. 404 when the path holds nothing or the cut names seqs the node does not hold, 410 when it lies before the node's compaction point, 422 when what the query names does not resolve (a malformed clock, an unknown node or experience, more than one of `at`, `heads` and `seen_by`).",
                "parameters": cut_params(true),
                "responses": {"200": ok_json("the value", json!({})), "400": err, "404": err, "410": err, "422": err}}},
            "/api/root": {"get": {"summary": "The state root now, or at the cut or view the query names (as `/api/state`; what `lcloud root` and `lcloud bisect` compare): 404 when the node does not hold the seqs it names, 410 when it lies before the node's compaction point.",
                "parameters": cut_params(false),
                "responses": {"200": ok_json("root", json!({"type": "object", "required": ["root"], "properties": {"root": {"type": "string"}}})), "400": err, "404": err, "410": err, "422": err}}},
            "/api/diff": {"get": {"summary": "What changed from one cut to another, path by path (`lcloud diff`): each cut `now`, a vector clock, or `@ID,ID…` (id prefixes).",
                "parameters": [
                    {"name": "from", "in": "query", "required": true, "schema": {"type": "string"}},
                    {"name": "to", "in": "query", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok_json("changes", json!({"type": "object", "required": ["changes"], "properties": {"changes": {"type": "array", "items": {"type": "object", "required": ["path", "before", "after"], "properties": {"path": {"type": "string"}, "before": {}, "after": {}, "splices": {"description": "for a text or list in both cuts: the splices from before to after, found by element id, each applied in order", "type": "array", "items": {"type": "object", "required": ["index", "delete", "insert"], "properties": {"index": {"type": "integer", "minimum": 0}, "delete": {"type": "integer", "minimum": 0}, "insert": {"description": "a string (text) or an array (list)"}}}}}}}}})), "400": err, "404": err, "410": err, "422": err}}},
            "/api/log": {"get": {"summary": "A page of the history, newest first (the canonical order reversed; `lcloud log`): at most `limit` experiences (default 1000), after the cursor `before` (a page's `next`, null on the last page), only `only`'s chain when given. Each row names the experience, its author, seq, depth, deps and ops, whether its author forked at or below it, and the contract calls the fold rejected with why.",
                "parameters": [
                    {"name": "only", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "before", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^[0-9]{1,19}\\.[0-9a-f]{64}$"}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": crate::inspect::LOG_PAGE_MAX}}],
                "responses": {"200": ok_json("page", log_page), "400": err, "422": err}}},
            "/api/conflicts": {"get": {"summary": "The concurrent values of the register at a path (and a text or list there, with its newest write), the one shown last, each with the experience that wrote it and its author (`lcloud conflicts`), now or at the cut or view `at`, `heads`, `without` and `seen_by` name (as `/api/state`). 404 when no register value is there or the cut names seqs the node does not hold, 410 when the cut lies before the node's compaction point.",
                "parameters": conflicts_params,
                "responses": {"200": ok_json("values", json!({"type": "object", "required": ["path", "values"], "properties": {"path": {"type": "string"}, "values": {"type": "array", "items": {"type": "object", "properties": {"experience": {"type": "string"}, "author": {"type": ["string", "null"]}, "value": {}}}}}})), "400": err, "404": err, "410": err, "422": err}}},
            "/api/status": {"get": {"summary": "Node, cloud, root, heads, frontier clock, experiences, peers; parked experiences and the first ids they wait for (a gap), the number of fork proofs, and finality: the stable frontier (what every current member has seen), how many experiences are stable and not yet, each member's part and the member furthest behind (`held_back_by`), the deepest final checkpoint and those pending or divergent, how many experiences are late (below a final checkpoint, outside what its attestations had seen: left out of the fold), and where the node compacted its history (`compacted`: depth, earliest cut held, experiences kept below it; null while it keeps the whole history).",
                "responses": {"200": ok_json("status", json!({"type": "object"}))}}},
            "/api/heads": {"get": {"summary": "Heads of the DAG.",
                "responses": {"200": ok_json("ids", json!({"type": "array", "items": {"type": "string"}}))}}},
            "/api/clock": {"get": {"summary": "Frontier clock: node id → highest seq held.",
                "responses": {"200": ok_json("clock", json!({"type": "object", "additionalProperties": {"type": "integer"}}))}}},
            "/api/forks": {"get": {"summary": "Fork proofs: each author caught signing two experiences at one place of its chain, with the proof (canonical DAG-CBOR, hex; `lcloud forks` checks them).",
                "responses": {"200": ok_json("forks", json!({"type": "array", "items": {"type": "object", "properties": {"author": {"type": "string"}, "seq": {"type": "integer"}, "proof": {"type": "string"}}}}))}}},
            "/api/ops": {"post": {"summary": "Write ops as one experience of this node (durable before the answer).",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ops"}}}},
                "responses": {"200": ok_json("written", json!({"type": "object", "properties": {"id": {"type": "string"}, "seq": {"type": "integer"}}})), "400": err, "422": err, "503": err}}},
            "/api/bundle": {
                "get": {"summary": "Every experience the node holds, as a bundle (LCLOUD-BUNDLE-1, see docs/format.md), streamed as the client reads it.",
                    "responses": {"200": {"description": "application/octet-stream"}, "503": err}},
                "post": {"summary": "Import a bundle: every experience is validated; reports new, known and rejected by reason.",
                    "requestBody": {"required": true, "content": {"application/octet-stream": {}}},
                    "responses": {"200": ok_json("report", json!({"type": "object", "properties": {
                        "new": {"type": "integer"}, "known": {"type": "integer"},
                        "rejected": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "first_rejection": {"type": ["string", "null"], "description": "the first rejected record and why"},
                        "root": {"type": ["string", "null"]}}})), "400": err,
                        "503": err}}},
            "/api/bundle/shallow": {
                "get": {"summary": "A shallow bundle (LCLOUD-SHALLOW1, see docs/store.md): the state at the deepest final checkpoint, the experiences it still names, the members' attestations and everything since, for `lcloud join --shallow URL`. 409 while no checkpoint is final.",
                    "responses": {"200": {"description": "application/octet-stream"}, "409": err, "503": err}}},
            "/api/contracts": {
                "get": {"summary": "The deployed contracts: id, local name, who deployed them, the deploying experience, module size, keys in their state.",
                    "responses": {"200": ok_json("contracts", json!({"type": "array", "items": {"type": "object"}}))}},
                "post": {"summary": "Deploy a contract (docs/contracts.md) and name it locally; answers once the deploy is folded: accepted, or rejected and why.",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["code"], "additionalProperties": false, "properties": {
                        "code": {"type": "string", "description": "the WebAssembly module, hex"},
                        "name": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "init": {"description": "arguments of the contract's init"},
                        "fuel": {"type": ["integer", "null"], "minimum": 1}}}}}},
                    "responses": {"200": ok_json("outcome", json!({"$ref": "#/components/schemas/Outcome"})), "400": err, "413": err, "422": err, "503": err}}},
            "/api/contracts/{name}/state": {"get": {"summary": "A contract's state (a map of text values), or the value under one key, now or at the cut or view `at`, `heads`, `without` and `seen_by` name (as `/api/state`): 404 when no contract has that name or it was not deployed at the cut.",
                "parameters": contract_params,
                "responses": {"200": ok_json("state", json!({})), "404": err, "410": err, "422": err}}},
            "/api/contracts/{name}/writes": {"get": {"summary": "Who set key `key` of a contract's state to the value it holds, now or at the cut or view `at`, `heads`, `without` and `seen_by` name (as `/api/state`), and the values it held before: each change with the call (or deploy) that made it, in canonical order. 404 when no contract has that name or it was not deployed at the cut.",
                "parameters": writes_params,
                "responses": {"200": ok_json("writes", writes), "400": err, "404": err, "410": err, "422": err}}},
            "/api/call": {"post": {"summary": "Call a contract's function as one experience of this node; answers once the call is folded: accepted, or rejected and why (as folded now: a concurrent call that sorts before it can still change this, identically on every node).",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["contract", "function"], "additionalProperties": false, "properties": {
                    "contract": {"type": "string", "description": "local name or id prefix"},
                    "function": {"type": "string"}, "args": {}, "fuel": {"type": ["integer", "null"], "minimum": 1}}}}}},
                "responses": {"200": ok_json("outcome", json!({"$ref": "#/components/schemas/Outcome"})), "400": err, "422": err, "503": err}}},
            "/api/key/rotate": {"post": {"summary": "Rotate this node's key: writes the rotation (signed by the old key), switches the node's directory to a new key and starts its network again under it; the old key may write no more. Refused (422) while the previous rotation has not reached a peer, or when this node may not write.",
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {}}}}},
                "responses": {"200": ok_json("rotated", json!({"type": "object", "properties": {"old": {"type": "string"}, "node": {"type": "string"}, "rotation": {"type": "string"}}})), "400": err, "422": err, "503": err}}},
            "/api/aliases": {"get": {"summary": "The node's local aliases: node id → name.",
                "responses": {"200": ok_json("aliases", json!({"type": "object", "additionalProperties": {"type": "string"}}))}}},
            "/api/events": {"get": {"summary": "Server-sent events: one `experience` event per experience stored (written here or received), with its calls and deploys the fold rejected (`rejected`: op index and reason).",
                "responses": {"200": {"description": "text/event-stream"}, "429": err, "503": err}}},
            "/debug/heads": {"get": {"summary": "Heads of the DAG.", "responses": {"200": {"description": "ids"}}}},
            "/debug/state-hash": {"get": {"summary": "The state root as text.", "responses": {"200": {"description": "hex"}}}},
            "/debug/isolate": {"post": {"summary": "Cut every peer connection and refuse new ones (on: true), or heal (on: false).",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["on"], "additionalProperties": false, "properties": {"on": {"type": "boolean"}}}}}},
                "responses": {"200": {"description": "done"}, "400": err, "503": err}}},
            "/metrics": {"get": {"summary": "Prometheus text: peers, experiences in/out, rejections by reason, sync lag.",
                "responses": {"200": {"description": "text/plain"}}}},
            "/api/openapi.json": {"get": {"summary": "This document.", "responses": {"200": {"description": "OpenAPI"}}}},
            "/api/health": {"get": {"summary": "Whether the node answers (no token needed).",
                "responses": {"200": ok_json("ok", json!({"type": "object", "properties": {"ok": {"type": "boolean"}}}))}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "Outcome": {"type": "object", "properties": {
                "id": {"type": "string"}, "seq": {"type": "integer"}, "contract": {"type": "string"},
                "accepted": {"type": "boolean"}, "reason": {"type": ["string", "null"]}, "root": {"type": "string"}}},
            "Ops": {"type": "object", "required": ["ops"], "additionalProperties": false, "properties": {"ops": {"type": "array", "minItems": 1, "maxItems": OPS_MAX, "items": {"$ref": "#/components/schemas/Op"}}}},
            "Op": {"oneOf": [
                {"type": "object", "required": ["op", "path", "value"], "additionalProperties": false, "properties": {
                    "op": {"enum": ["set", "add", "remove"]},
                    "path": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$", "description": "JSON Pointer"},
                    "value": {}}},
                {"type": "object", "required": ["op", "path"], "additionalProperties": false, "properties": {
                    "op": {"const": "del"},
                    "path": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$", "description": "JSON Pointer"}}},
                {"type": "object", "required": ["op", "path"], "additionalProperties": false, "properties": {
                    "op": {"const": "incr"},
                    "path": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$", "description": "JSON Pointer"},
                    "by": {"type": "integer", "minimum": -9223372036854775808i64, "maximum": 9223372036854775807i64, "description": "default 1 (a 64-bit integer)"}}},
                {"type": "object", "required": ["op", "path", "index", "value"], "additionalProperties": false, "description": "Insert before the element at `index` (the length: at the end): a string's characters into a text, anything else (or a string into a list) as one list element. An empty path becomes a list.", "properties": {
                    "op": {"const": "insert"},
                    "path": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$", "description": "JSON Pointer"},
                    "index": index.clone(),
                    "value": {}}},
                {"type": "object", "required": ["op", "path", "index", "values"], "additionalProperties": false, "description": "Insert each of `values` into the list at `path` before the element at `index`. An empty path becomes a list.", "properties": {
                    "op": {"const": "insert"},
                    "path": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$", "description": "JSON Pointer"},
                    "index": index.clone(),
                    "values": {"type": "array"}}},
                {"type": "object", "required": ["op", "path", "index"], "additionalProperties": false, "description": "Delete `count` elements (characters of a text) from `index` on.", "properties": {
                    "op": {"const": "delete"},
                    "path": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$", "description": "JSON Pointer"},
                    "index": index.clone(),
                    "count": {"type": "integer", "minimum": 1, "maximum": 9223372036854775807i64, "description": "default 1"}}},
                {"type": "object", "required": ["op", "path", "index", "delete", "text"], "additionalProperties": false, "description": "Delete `delete` characters of a text from `index` (Unicode scalar values) and insert `text` there. An empty path becomes a text.", "properties": {
                    "op": {"const": "splice"},
                    "path": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$", "description": "JSON Pointer"},
                    "index": index.clone(),
                    "delete": index.clone(),
                    "text": {"type": "string"}}},
                {"type": "object", "required": ["op", "path", "from", "to"], "additionalProperties": false, "description": "Move the list element at `from` so that it ends at index `to`.", "properties": {
                    "op": {"const": "move"},
                    "path": {"type": "string", "pattern": "^(/([^~]|~[01])*)*$", "description": "JSON Pointer"},
                    "from": index.clone(),
                    "to": index}},
                {"type": "object", "required": ["op", "node"], "additionalProperties": false, "properties": {
                    "op": {"enum": ["add_member", "remove_member", "add_admin", "remove_admin"]},
                    "node": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "admin tokens only; the creator cannot be removed or demoted"}}}
            ]}
        }}
    })
}
