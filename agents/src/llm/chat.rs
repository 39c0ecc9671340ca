//! The one representation of a conversation with tool calls that both wire formats render
//! from and parse into: whatever the backend, the same session is the same [`ChatRequest`]s
//! and the same [`ChatReply`]s.

use serde_json::Value;

/// A tool the model may call: its name, what it is for, and a JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// A tool call the model made (or, for an earlier round, the call its draft stands for).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The id the results refer to: the server's for a live call, derived from the round for a
    /// replayed one.
    pub id: String,
    pub name: String,
    /// The arguments, parsed (OpenAI sends them as a JSON string, Anthropic as an object).
    pub arguments: Value,
}

/// The answer to one tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub call_id: String,
    pub content: String,
    /// The call was refused (Anthropic's `is_error`; OpenAI's content says `error:`).
    pub is_error: bool,
}

/// One turn of the conversation (the system prompt is apart, in [`ChatRequest::system`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    User(String),
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The answers to the tool calls of the assistant turn right before.
    ToolResults(Vec<ToolResult>),
}

/// What is sent to a model for one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
}

/// What a model answered for one turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatReply {
    /// Text beside the calls (often empty).
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
}
