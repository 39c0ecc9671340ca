//! [`LlmProposer`]: a [`Proposer`] backed by a model through any [`ChatBackend`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::chat::{ChatRequest, Message, ToolCall, ToolResult};
use super::prompt::{self, EDIT_FILE, FINISH};
use super::{AnthropicClient, ChatBackend, LlmConfig, LlmKind, OpenAiClient};
use crate::{AgentError, Context, Draft, Edit, Proposer, Target};

/// How many model turns one round may take (edits answered with `ok`/`error`, then `finish`).
pub const MAX_TURNS: usize = 6;

/// Drafts edits by asking a model, which answers only through the `edit_file` and `finish`
/// tools. Within a round, an edit whose `old_text` does not occur exactly once (or whose file
/// is not the stack's) is sent back to the model at once as an error result, and `finish` is
/// refused when it comes in the same turn as a refused edit (so the model fixes the edit first);
/// everything else is the verifier's to judge.
pub struct LlmProposer {
    pub client: Box<dyn ChatBackend>,
}

impl LlmProposer {
    pub fn new(client: Box<dyn ChatBackend>) -> LlmProposer {
        LlmProposer { client }
    }

    /// The client for `kind`, built from `config`.
    pub fn from_config(kind: LlmKind, config: LlmConfig) -> Result<LlmProposer, AgentError> {
        let client: Box<dyn ChatBackend> = match kind {
            LlmKind::OpenAi => Box::new(OpenAiClient::new(config)?),
            LlmKind::Anthropic => Box::new(AnthropicClient::new(config)?),
        };
        Ok(LlmProposer { client })
    }
}

#[async_trait]
impl Proposer for LlmProposer {
    fn name(&self) -> String {
        self.client.name()
    }

    async fn propose(&self, ctx: &Context) -> Result<Draft, AgentError> {
        let mut request = ChatRequest {
            system: prompt::SYSTEM_PROMPT.into(),
            messages: prompt::conversation(ctx),
            tools: prompt::tools(),
        };
        let mut files = Files::new(ctx);
        let mut edits = Vec::new();
        let mut silent = false;
        for _ in 0..MAX_TURNS {
            let reply = self.client.chat(&request).await?;
            if reply.tool_calls.is_empty() {
                if silent {
                    return Err(AgentError::Unsupported(format!(
                        "the model answered without calling a tool, twice: {}",
                        clip(&reply.text, 300)
                    )));
                }
                silent = true;
                request.messages.push(Message::Assistant {
                    text: reply.text,
                    tool_calls: Vec::new(),
                });
                request.messages.push(Message::User(prompt::NUDGE.into()));
                continue;
            }
            silent = false;
            let mut results = Vec::new();
            let mut rejected = 0;
            let mut finish = None;
            for call in &reply.tool_calls {
                match parse_call(call)? {
                    Call::Edit(mut edit) => match files.apply(&edit) {
                        Ok(()) => {
                            edit.file = normal(&edit.file);
                            edits.push(edit);
                            results.push(answer(call, "ok: edit recorded", false));
                        }
                        Err(why) => {
                            rejected += 1;
                            results.push(answer(call, &why, true));
                        }
                    },
                    Call::Finish { summary, target } => finish = Some((call, summary, target)),
                }
            }
            if let Some((call, summary, target)) = finish {
                if rejected == 0 {
                    return Ok(Draft {
                        edits,
                        summary,
                        target,
                    });
                }
                results.push(answer(
                    call,
                    &format!(
                        "not finished: {rejected} edit(s) of this turn were refused; fix them with \
                         `edit_file`, then call `finish` again"
                    ),
                    true,
                ));
            }
            request.messages.push(Message::Assistant {
                text: reply.text,
                tool_calls: reply.tool_calls,
            });
            request.messages.push(Message::ToolResults(results));
        }
        Err(AgentError::Model(format!(
            "the model did not call `finish` within {MAX_TURNS} turns"
        )))
    }
}

fn answer(call: &ToolCall, content: &str, is_error: bool) -> ToolResult {
    ToolResult {
        call_id: call.id.clone(),
        content: content.into(),
        is_error,
    }
}

/// A tool call, checked.
enum Call {
    Edit(Edit),
    Finish {
        summary: String,
        target: Option<Target>,
    },
}

fn parse_call(call: &ToolCall) -> Result<Call, AgentError> {
    let args = &call.arguments;
    let bad = |why: &str| {
        AgentError::Model(format!(
            "malformed arguments for `{}`: {why}; got {}",
            call.name,
            clip(&args.to_string(), 300)
        ))
    };
    if !args.is_object() {
        return Err(bad("expected an object"));
    }
    let string = |key: &str| -> Result<String, AgentError> {
        args[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("`{key}` must be a string")))
    };
    match call.name.as_str() {
        EDIT_FILE => Ok(Call::Edit(Edit {
            file: PathBuf::from(string("file")?),
            old: string("old_text")?,
            new: string("new_text")?,
        })),
        FINISH => {
            let summary = string("summary")?.trim().to_string();
            if summary.is_empty() {
                return Err(bad("`summary` is empty"));
            }
            let target = match &args["cost_cut"] {
                Value::Null => None,
                v => match v.as_f64() {
                    Some(f) if f > 0.0 && f <= 1.0 => Some(Target::CostCut(f)),
                    _ => return Err(bad("`cost_cut` must be a fraction in (0, 1]")),
                },
            };
            Ok(Call::Finish { summary, target })
        }
        other => Err(AgentError::Model(format!(
            "the model called an unknown tool `{}` (the tools are `{EDIT_FILE}` and `{FINISH}`)",
            clip(other, 100)
        ))),
    }
}

/// The stack's files as the draft so far leaves them, to check each edit when it is made.
struct Files(BTreeMap<PathBuf, String>);

impl Files {
    fn new(ctx: &Context) -> Files {
        Files(
            ctx.files
                .iter()
                .map(|f| (normal(&f.path), f.text.clone()))
                .collect(),
        )
    }

    fn apply(&mut self, edit: &Edit) -> Result<(), String> {
        let path = normal(&edit.file);
        let Some(text) = self.0.get_mut(&path) else {
            let known: Vec<String> = self.0.keys().map(|p| p.display().to_string()).collect();
            return Err(format!(
                "no file {} in the context; the files are: {}",
                edit.file.display(),
                known.join(", ")
            ));
        };
        if edit.old.is_empty() {
            return Err("`old_text` is empty; copy the text to replace from the file".into());
        }
        if edit.old == edit.new {
            return Err("`old_text` and `new_text` are the same: the edit changes nothing".into());
        }
        match text.matches(edit.old.as_str()).count() {
            1 => {
                *text = text.replacen(edit.old.as_str(), &edit.new, 1);
                Ok(())
            }
            0 => Err(format!(
                "`old_text` does not occur in {} (as your earlier edits of this draft left it); \
                 copy it exactly from the file",
                edit.file.display()
            )),
            n => Err(format!(
                "`old_text` occurs {n} times in {}; include neighbouring lines so that it occurs \
                 exactly once",
                edit.file.display()
            )),
        }
    }
}

/// `./a/b.ncl` and `a/b.ncl` are the same file.
fn normal(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// At most `n` characters of `s`.
fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
