//! Anthropic Messages: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`. The system prompt is the top-level `system`; tools are
//! `{name, description, input_schema}`; the answer's calls are `content[]` blocks
//! `{type: tool_use, id, name, input}`; results are `{type: tool_result, tool_use_id, content}`
//! blocks opening the next user turn (turns alternate, so consecutive user turns are merged).

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::chat::{ChatReply, ChatRequest, Message, ToolCall};
use super::http::Http;
use super::{ChatBackend, LlmConfig, arguments_from_str, malformed};
use crate::AgentError;

/// The API version this client speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A Messages API client.
pub struct AnthropicClient {
    config: LlmConfig,
    http: Http,
    headers: HeaderMap,
}

impl AnthropicClient {
    pub fn new(config: LlmConfig) -> Result<AnthropicClient, AgentError> {
        let http = Http::new(&config)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            let (name, value) = Http::secret_header("x-api-key", key)?;
            headers.insert(name, value);
        }
        Ok(AnthropicClient {
            config,
            http,
            headers,
        })
    }

    fn url(&self) -> String {
        format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'))
    }
}

#[async_trait]
impl ChatBackend for AnthropicClient {
    fn name(&self) -> String {
        format!("anthropic:{}", self.config.model)
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatReply, AgentError> {
        let body = to_wire(request, &self.config.model, self.config.max_tokens);
        let answer = self.http.post(&self.url(), &self.headers, &body).await?;
        from_wire(&answer)
    }
}

/// The request body for `request`.
pub(crate) fn to_wire(request: &ChatRequest, model: &str, max_tokens: u32) -> Value {
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, blocks) = match m {
            Message::User(text) => ("user", vec![json!({ "type": "text", "text": text })]),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() || tool_calls.is_empty() {
                    let text = if text.is_empty() { "(no answer)" } else { text };
                    blocks.push(json!({ "type": "text", "text": text }));
                }
                blocks.extend(tool_calls.iter().map(|c| {
                    json!({
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.name,
                        "input": if c.arguments.is_object() { c.arguments.clone() } else { json!({}) },
                    })
                }));
                ("assistant", blocks)
            }
            Message::ToolResults(results) => (
                "user",
                results
                    .iter()
                    .map(|r| {
                        let mut b = json!({
                            "type": "tool_result",
                            "tool_use_id": r.call_id,
                            "content": r.content,
                        });
                        if r.is_error {
                            b["is_error"] = Value::Bool(true);
                        }
                        b
                    })
                    .collect(),
            ),
        };
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "system": request.system,
        "messages": messages,
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters,
                })
            })
            .collect();
    }
    body
}

/// The reply in a response body.
pub(crate) fn from_wire(answer: &Value) -> Result<ChatReply, AgentError> {
    let Some(blocks) = answer["content"].as_array() else {
        return Err(malformed("no content[]", answer));
    };
    let mut reply = ChatReply::default();
    for (i, b) in blocks.iter().enumerate() {
        match b["type"].as_str() {
            Some("text") => {
                if !reply.text.is_empty() {
                    reply.text.push('\n');
                }
                reply.text.push_str(b["text"].as_str().unwrap_or_default());
            }
            Some("tool_use") => {
                let Some(name) = b["name"].as_str() else {
                    return Err(malformed(
                        &format!("content[{i}] (tool_use) has no name"),
                        answer,
                    ));
                };
                let arguments = match &b["input"] {
                    v @ Value::Object(_) => v.clone(),
                    Value::Null => json!({}),
                    // Not what the API sends; parsed leniently, then checked like any other.
                    Value::String(s) => arguments_from_str(name, s)?,
                    other => {
                        return Err(AgentError::Model(format!(
                            "malformed arguments for `{name}`: expected an object, got {other}"
                        )));
                    }
                };
                let id = match b["id"].as_str() {
                    Some(id) if !id.is_empty() => id.to_string(),
                    _ => format!("toolu_{i}"),
                };
                reply.tool_calls.push(ToolCall {
                    id,
                    name: name.to_string(),
                    arguments,
                });
            }
            // Thinking and other blocks carry nothing for a draft.
            _ => {}
        }
    }
    Ok(reply)
}
