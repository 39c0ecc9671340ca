//! A scripted model server on 127.0.0.1 speaking both LLM wire formats, for the agents' tests:
//! OpenAI-compatible Chat Completions (`POST /v1/chat/completions`, also `/chat/completions`)
//! and Anthropic Messages (`POST /v1/messages`).
//!
//! [`LlmStub::start`] takes a script: each request is answered with the next step, rendered in
//! the wire format of the endpoint it hit, and every request is recorded (path, headers, body)
//! so tests can assert on the prompt. A step is one of:
//!
//! - `[{"name": "edit_file", "arguments": {…}}, …]`: a turn of tool calls. `arguments` is an
//!   object; a string is sent verbatim (OpenAI's `arguments` string, Anthropic's `input`), to
//!   script malformed calls. Call ids are random-looking (`call_…`, `toolu_…`), as real servers'
//!   are: compare recorded requests through [`normalize_call_ids`].
//! - `{"text": "…", "tool_calls": [ … ]}`: the same with assistant text (either may be absent).
//! - `{"status": 429, "headers": {"retry-after": "1"}, "body": …}`: an HTTP error; `body` is
//!   JSON or a string.
//!
//! Any step may carry `"delay_ms": N` to answer late. Once the script is exhausted, requests get
//! `410 Gone` with a message saying so.
//!
//! The stub is stricter than the real services on shape (in the spirit of an in-memory backend
//! that is stricter than the real ones): a request whose tool results do not answer the tool
//! calls right before them, or whose roles are out of order, gets `400` naming the problem (and
//! is still recorded; it does not consume a script step).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One request the stub received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `/v1/chat/completions`, `/chat/completions` or `/v1/messages`.
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (a string when it was not JSON).
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    script: Mutex<Script>,
}

#[derive(Default)]
struct Script {
    steps: std::collections::VecDeque<Value>,
    served: usize,
    recorded: Vec<Recorded>,
}

/// The scripted model server, stopped on drop.
pub struct LlmStub {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Arc<Shared>,
    _server: crate::loopback::Served,
}

impl LlmStub {
    /// Serves `script` on an ephemeral port of 127.0.0.1, from a thread of its own (usable from
    /// sync and async tests alike).
    pub fn start(script: Vec<Value>) -> LlmStub {
        let bound = crate::loopback::bind();
        let url = bound.url.clone();
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                steps: script.into(),
                ..Script::default()
            }),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(shared.clone());
        let server = bound.serve("llm-stub", app);
        LlmStub {
            url,
            shared,
            _server: server,
        }
    }

    /// The base URL for an OpenAI-compatible client (`{url}/v1`, as `https://api.openai.com/v1`).
    pub fn openai_base(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// The bodies of every request received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.recorded().into_iter().map(|r| r.body).collect()
    }

    /// Every request received so far as a wire-neutral conversation
    /// ([`Recorded::conversation`]).
    pub fn conversations(&self) -> Vec<Value> {
        self.recorded().iter().map(Recorded::conversation).collect()
    }

    /// Every request received so far, with its path and headers.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared
            .script
            .lock()
            .expect("the stub's lock")
            .recorded
            .clone()
    }

    /// How many script steps are left.
    pub fn remaining(&self) -> usize {
        self.shared
            .script
            .lock()
            .expect("the stub's lock")
            .steps
            .len()
    }
}

impl Recorded {
    /// The request as one wire-neutral conversation, so that the same session sent in either
    /// format compares equal (after [`normalize_call_ids`]):
    ///
    /// ```json
    /// { "model": …, "max_tokens": …, "system": "…",
    ///   "tools": [{"name", "description", "parameters"}],
    ///   "turns": [{"role": "user", "text"},
    ///             {"role": "assistant", "text", "tool_calls": [{"id", "name", "arguments"}]},
    ///             {"role": "tool", "id", "content", "is_error"}] }
    /// ```
    ///
    /// Call arguments are parsed JSON (OpenAI sends a string, Anthropic an object). Chat
    /// Completions has no error flag on a tool message: one whose content starts with `error: `
    /// (Chimera's convention) reads as an error result, the prefix dropped. A body that is
    /// neither format is returned as is.
    pub fn conversation(&self) -> Value {
        if self.path.ends_with("/messages") {
            anthropic_conversation(&self.body)
        } else if self.path.ends_with("/chat/completions") {
            openai_conversation(&self.body)
        } else {
            self.body.clone()
        }
    }
}

fn openai_conversation(body: &Value) -> Value {
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for m in body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let text = text_of(&m["content"]);
        match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" => system.push(text),
            "assistant" => {
                let calls: Vec<Value> = m["tool_calls"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        let arguments = match &c["function"]["arguments"] {
                            Value::String(s) => {
                                serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
                            }
                            other => other.clone(),
                        };
                        json!({ "id": c["id"], "name": c["function"]["name"], "arguments": arguments })
                    })
                    .collect();
                turns.push(json!({ "role": "assistant", "text": text, "tool_calls": calls }));
            }
            "tool" => {
                let (content, is_error) = match text.strip_prefix("error: ") {
                    Some(rest) => (rest.to_string(), true),
                    None => (text, false),
                };
                turns.push(json!({
                    "role": "tool", "id": m["tool_call_id"], "content": content, "is_error": is_error,
                }));
            }
            role => turns.push(json!({ "role": role, "text": text })),
        }
    }
    let tools: Vec<Value> = body["tools"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let f = &t["function"];
            json!({ "name": f["name"], "description": f["description"], "parameters": f["parameters"] })
        })
        .collect();
    json!({
        "model": body["model"],
        "max_tokens": body.get("max_completion_tokens").unwrap_or(&body["max_tokens"]),
        "system": system.join("\n"),
        "tools": tools,
        "turns": turns,
    })
}

fn anthropic_conversation(body: &Value) -> Value {
    let mut turns = Vec::new();
    for m in body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let role = m["role"].as_str().unwrap_or_default();
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({ "type": "text", "text": s })],
            Value::Array(b) => b.clone(),
            _ => Vec::new(),
        };
        if role == "assistant" {
            let text: Vec<String> = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .map(|b| text_of(&b["text"]))
                .collect();
            let calls: Vec<Value> = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| json!({ "id": b["id"], "name": b["name"], "arguments": b["input"] }))
                .collect();
            turns
                .push(json!({ "role": "assistant", "text": text.join("\n"), "tool_calls": calls }));
            continue;
        }
        let mut text = Vec::new();
        for b in &blocks {
            match b["type"].as_str().unwrap_or_default() {
                "tool_result" => turns.push(json!({
                    "role": "tool",
                    "id": b["tool_use_id"],
                    "content": text_of(&b["content"]),
                    "is_error": b["is_error"].as_bool().unwrap_or(false),
                })),
                _ => text.push(text_of(&b["text"])),
            }
        }
        if !text.is_empty() {
            turns.push(json!({ "role": role, "text": text.join("\n") }));
        }
    }
    let tools: Vec<Value> = body["tools"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| json!({ "name": t["name"], "description": t["description"], "parameters": t["input_schema"] }))
        .collect();
    json!({
        "model": body["model"],
        "max_tokens": body["max_tokens"],
        "system": text_of(&body["system"]),
        "tools": tools,
        "turns": turns,
    })
}

/// A content value as text: a string, or the text of its text blocks, joined.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A tool call for a script: `{"name": name, "arguments": arguments}`.
pub fn tool_call(name: &str, arguments: Value) -> Value {
    json!({ "name": name, "arguments": arguments })
}

/// Replaces every call id in `v` (the values of `id`, `tool_call_id` and `tool_use_id` keys)
/// by `id_1`, `id_2`, … in order of first appearance, so requests that differ only by the
/// random ids a server chose compare equal, while a result that answers the wrong call still
/// shows.
pub fn normalize_call_ids(v: &Value) -> Value {
    fn walk(v: &Value, seen: &mut HashMap<String, String>) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = match (k.as_str(), v) {
                            ("id" | "tool_call_id" | "tool_use_id", Value::String(id)) => {
                                let n = seen.len() + 1;
                                Value::String(
                                    seen.entry(id.clone())
                                        .or_insert_with(|| format!("id_{n}"))
                                        .clone(),
                                )
                            }
                            _ => walk(v, seen),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|i| walk(i, seen)).collect()),
            other => other.clone(),
        }
    }
    walk(v, &mut HashMap::new())
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    OpenAi,
    Anthropic,
}

async fn openai(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&shared, Wire::OpenAi, uri.path(), &headers, &body).await
}

async fn anthropic(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&shared, Wire::Anthropic, uri.path(), &headers, &body).await
}

async fn serve(
    shared: &Shared,
    wire: Wire,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let body: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let step = {
        let mut script = shared.script.lock().expect("the stub's lock");
        script.recorded.push(Recorded {
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
        });
        let problem = match wire {
            Wire::OpenAi => check_openai(&body),
            Wire::Anthropic => check_anthropic(headers, &body),
        };
        if let Err(problem) = problem {
            return error(wire, StatusCode::BAD_REQUEST, &problem);
        }
        match script.steps.pop_front() {
            Some(step) => {
                script.served += 1;
                step
            }
            None => {
                let msg = format!(
                    "llm stub: the script is exhausted (it had {} steps)",
                    script.served
                );
                return error(wire, StatusCode::GONE, &msg);
            }
        }
    };
    if let Some(ms) = step.get("delay_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = step.get("status").and_then(Value::as_u64) {
        let status = StatusCode::from_u16(status as u16).expect("a scripted HTTP status");
        let mut resp = match step.get("body") {
            Some(Value::String(s)) => (status, s.clone()).into_response(),
            Some(v) => (status, axum::Json(v.clone())).into_response(),
            None => status.into_response(),
        };
        if let Some(Value::Object(hs)) = step.get("headers") {
            for (k, v) in hs {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                resp.headers_mut().insert(
                    HeaderName::try_from(k.as_str()).expect("a scripted header name"),
                    HeaderValue::try_from(v).expect("a scripted header value"),
                );
            }
        }
        return resp;
    }
    let (text, calls) = match &step {
        Value::Array(calls) => (None, calls.clone()),
        Value::Object(o) => (
            o.get("text").and_then(Value::as_str).map(str::to_string),
            o.get("tool_calls")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        ),
        other => panic!("llm stub: a script step is an array or an object, not {other}"),
    };
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let reply = match wire {
        Wire::OpenAi => render_openai(model, text, &calls),
        Wire::Anthropic => render_anthropic(model, text, &calls),
    };
    axum::Json(reply).into_response()
}

fn random_id(prefix: &str) -> String {
    let tail: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect();
    format!("{prefix}{tail}")
}

fn render_openai(model: Value, text: Option<String>, calls: &[Value]) -> Value {
    let mut message = json!({ "role": "assistant", "content": text });
    if !calls.is_empty() {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let arguments = match &c["arguments"] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                json!({
                    "id": random_id("call_"),
                    "type": "function",
                    "function": { "name": c["name"], "arguments": arguments },
                })
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": random_id("chatcmpl-"),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" },
        }],
        "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 },
    })
}

fn render_anthropic(model: Value, text: Option<String>, calls: &[Value]) -> Value {
    let mut content: Vec<Value> = text
        .map(|t| json!({ "type": "text", "text": t }))
        .into_iter()
        .collect();
    content.extend(calls.iter().map(|c| {
        json!({
            "type": "tool_use",
            "id": random_id("toolu_"),
            "name": c["name"],
            "input": c["arguments"],
        })
    }));
    json!({
        "id": random_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" },
        "stop_sequence": null,
        "usage": { "input_tokens": 0, "output_tokens": 0 },
    })
}

fn error(wire: Wire, status: StatusCode, message: &str) -> Response {
    let body = match wire {
        Wire::OpenAi => json!({ "error": {
            "message": message, "type": "invalid_request_error", "code": null } }),
        Wire::Anthropic => json!({ "type": "error", "error": {
            "type": "invalid_request_error", "message": message } }),
    };
    (status, axum::Json(body)).into_response()
}

/// Chat Completions: a model and messages; every assistant tool call is answered by `tool`
/// messages right after it, in any order, and every `tool` message answers one of them.
fn check_openai(body: &Value) -> Result<(), String> {
    if !body["model"].is_string() {
        return Err("`model` is required".into());
    }
    let messages = body["messages"]
        .as_array()
        .ok_or("`messages` must be an array")?;
    let mut open: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        if role == "tool" {
            let id = m["tool_call_id"].as_str().ok_or(format!(
                "messages[{i}]: a tool message needs `tool_call_id`"
            ))?;
            let Some(pos) = open.iter().position(|o| o == id) else {
                return Err(format!(
                    "messages[{i}]: `tool_call_id` {id} does not answer a tool call of the preceding assistant message"
                ));
            };
            open.remove(pos);
            if !m["content"].is_string() {
                return Err(format!(
                    "messages[{i}]: a tool message needs string `content`"
                ));
            }
            continue;
        }
        if !open.is_empty() {
            return Err(format!(
                "messages[{i}]: an assistant message with `tool_calls` must be followed by tool messages answering each call (missing: {})",
                open.join(", ")
            ));
        }
        match role {
            "system" | "user" => {}
            "assistant" => {
                for (j, c) in m["tool_calls"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let id = c["id"]
                        .as_str()
                        .ok_or(format!("messages[{i}].tool_calls[{j}]: `id` is required"))?;
                    if c["type"] != "function" || !c["function"]["name"].is_string() {
                        return Err(format!(
                            "messages[{i}].tool_calls[{j}]: expected {{type: function, function: {{name, arguments}}}}"
                        ));
                    }
                    if !c["function"]["arguments"].is_string() {
                        return Err(format!(
                            "messages[{i}].tool_calls[{j}].function.arguments must be a JSON string"
                        ));
                    }
                    open.push(id.to_string());
                }
            }
            other => return Err(format!("messages[{i}]: unknown role {other:?}")),
        }
    }
    if !open.is_empty() {
        return Err(format!(
            "tool calls without a tool message answering them: {}",
            open.join(", ")
        ));
    }
    for (i, t) in body["tools"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if t["type"] != "function" || !t["function"]["name"].is_string() {
            return Err(format!(
                "tools[{i}]: expected {{type: function, function: {{name, parameters}}}}"
            ));
        }
    }
    Ok(())
}

/// Messages: the version header, `max_tokens`, a top-level `system`, turns alternating from
/// `user`; every `tool_use` is answered by a `tool_result` at the start of the next user turn.
fn check_anthropic(headers: &HeaderMap, body: &Value) -> Result<(), String> {
    if headers.get("anthropic-version").is_none() {
        return Err("the anthropic-version header is required".into());
    }
    if !body["model"].is_string() || !body["max_tokens"].is_u64() {
        return Err("`model` and `max_tokens` are required".into());
    }
    let messages = body["messages"]
        .as_array()
        .ok_or("`messages` must be an array")?;
    let mut open: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err(format!(
                "messages[{i}]: roles must alternate user/assistant starting with user; got {role:?}"
            ));
        }
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({ "type": "text", "text": s })],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(format!(
                    "messages[{i}]: `content` must be a string or blocks"
                ));
            }
        };
        let mut answered = Vec::new();
        let mut seen_other = false;
        for (j, b) in blocks.iter().enumerate() {
            match (role, b["type"].as_str().unwrap_or_default()) {
                ("user", "tool_result") => {
                    if seen_other {
                        return Err(format!(
                            "messages[{i}].content[{j}]: tool_result blocks must come first in a user turn"
                        ));
                    }
                    let id = b["tool_use_id"].as_str().ok_or(format!(
                        "messages[{i}].content[{j}]: `tool_use_id` is required"
                    ))?;
                    if !open.iter().any(|o| o == id) {
                        return Err(format!(
                            "messages[{i}].content[{j}]: tool_use_id {id} does not answer a tool_use of the preceding assistant turn"
                        ));
                    }
                    answered.push(id.to_string());
                }
                ("assistant", "tool_use") => {
                    if !b["id"].is_string() || !b["name"].is_string() || !b["input"].is_object() {
                        return Err(format!(
                            "messages[{i}].content[{j}]: a tool_use needs `id`, `name` and an object `input`"
                        ));
                    }
                }
                (_, "text") => seen_other = true,
                (_, other) => {
                    return Err(format!(
                        "messages[{i}].content[{j}]: unexpected block {other:?} in a {role} turn"
                    ));
                }
            }
        }
        if role == "user" {
            if let Some(missing) = open.iter().find(|o| !answered.contains(o)) {
                return Err(format!(
                    "messages[{i}]: tool_use {missing} has no tool_result in the next user turn"
                ));
            }
            open.clear();
        } else {
            open = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str().map(str::to_string))
                .collect();
        }
    }
    if messages.len() % 2 == 0 {
        return Err("the last turn must be the user's".into());
    }
    for (i, t) in body["tools"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if !t["name"].is_string() || !t["input_schema"].is_object() {
            return Err(format!(
                "tools[{i}]: `name` and `input_schema` are required"
            ));
        }
    }
    if body
        .get("system")
        .is_some_and(|s| !s.is_string() && !s.is_array())
    {
        return Err("`system` must be a string or text blocks".into());
    }
    Ok(())
}
