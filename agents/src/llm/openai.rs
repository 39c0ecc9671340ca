//! OpenAI-compatible Chat Completions: `POST {base}/chat/completions` with
//! `Authorization: Bearer KEY`. The system prompt is the first message; tools are
//! `{type: function, function: {name, description, parameters}}`; the answer's calls are
//! `choices[0].message.tool_calls[].function.{name, arguments}` with `arguments` a JSON string;
//! each result is a `{role: tool, tool_call_id, content}` message.

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::chat::{ChatReply, ChatRequest, Message, ToolCall};
use super::http::Http;
use super::{ChatBackend, LlmConfig, arguments_from_str, malformed};
use crate::AgentError;

/// A Chat Completions client (OpenAI, or any server speaking its format: llama.cpp, vLLM,
/// Ollama, …).
pub struct OpenAiClient {
    config: LlmConfig,
    http: Http,
    headers: HeaderMap,
}

impl OpenAiClient {
    pub fn new(config: LlmConfig) -> Result<OpenAiClient, AgentError> {
        let http = Http::new(&config)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            let (name, value) = Http::secret_header("authorization", &format!("Bearer {key}"))?;
            headers.insert(name, value);
        }
        Ok(OpenAiClient {
            config,
            http,
            headers,
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        )
    }
}

#[async_trait]
impl ChatBackend for OpenAiClient {
    fn name(&self) -> String {
        format!("openai:{}", self.config.model)
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatReply, AgentError> {
        let body = to_wire(request, &self.config.model, self.config.max_tokens);
        let answer = self.http.post(&self.url(), &self.headers, &body).await?;
        from_wire(&answer)
    }
}

/// The request body for `request`.
pub(crate) fn to_wire(request: &ChatRequest, model: &str, max_tokens: u32) -> Value {
    let mut messages = vec![json!({ "role": "system", "content": request.system })];
    for m in &request.messages {
        match m {
            Message::User(text) => messages.push(json!({ "role": "user", "content": text })),
            Message::Assistant { text, tool_calls } => {
                let mut msg = json!({
                    "role": "assistant",
                    "content": if text.is_empty() && !tool_calls.is_empty() {
                        Value::Null
                    } else {
                        Value::String(text.clone())
                    },
                });
                if !tool_calls.is_empty() {
                    msg["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "type": "function",
                                "function": {
                                    "name": c.name,
                                    "arguments": c.arguments.to_string(),
                                },
                            })
                        })
                        .collect();
                }
                messages.push(msg);
            }
            Message::ToolResults(results) => {
                messages.extend(results.iter().map(|r| {
                    json!({
                        "role": "tool",
                        "tool_call_id": r.call_id,
                        "content": if r.is_error {
                            format!("error: {}", r.content)
                        } else {
                            r.content.clone()
                        },
                    })
                }));
            }
        }
    }
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": messages,
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                })
            })
            .collect();
    }
    body
}

/// The reply in a response body.
pub(crate) fn from_wire(answer: &Value) -> Result<ChatReply, AgentError> {
    let Some(message) = answer.pointer("/choices/0/message") else {
        return Err(malformed("no choices[0].message", answer));
    };
    let text = message["content"].as_str().unwrap_or_default().to_string();
    let mut tool_calls = Vec::new();
    let calls = match &message["tool_calls"] {
        Value::Null => &[][..],
        Value::Array(calls) => calls.as_slice(),
        _ => return Err(malformed("message.tool_calls is not an array", answer)),
    };
    for (i, c) in calls.iter().enumerate() {
        let Some(name) = c.pointer("/function/name").and_then(Value::as_str) else {
            return Err(malformed(
                &format!("tool_calls[{i}] has no function.name"),
                answer,
            ));
        };
        let arguments = match c.pointer("/function/arguments") {
            Some(Value::String(s)) => arguments_from_str(name, s)?,
            // Some compatible servers send the object itself.
            Some(v @ Value::Object(_)) => v.clone(),
            None | Some(Value::Null) => json!({}),
            Some(other) => {
                return Err(AgentError::Model(format!(
                    "malformed arguments for `{name}`: expected a JSON string, got {other}"
                )));
            }
        };
        let id = match c["id"].as_str() {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("call_{i}"),
        };
        tool_calls.push(ToolCall {
            id,
            name: name.to_string(),
            arguments,
        });
    }
    Ok(ChatReply { text, tool_calls })
}
