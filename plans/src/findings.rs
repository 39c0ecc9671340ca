//! What policies found in a plan, as every client shows it: a `deny` blocks an apply, a `warn`
//! annotates it. The policy crate produces them; the renderers here show them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Deny,
    Warn,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Deny => "deny",
            Level::Warn => "warn",
        }
    }
}

/// One violation or warning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Finding {
    pub level: Level,
    /// The rule's id, e.g. `chimera.required_tags` or the Nickel policy's `rule`.
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub message: String,
    /// The policy file, as given (relative to the working directory when possible).
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl Finding {
    /// `policies/tags.rego:7`
    pub fn location(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.file),
            None => self.file.clone(),
        }
    }
}

/// The policy lines of a text plan: denies first, then warnings.
pub fn findings_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    let (deny, warn) = counts(findings);
    if findings.is_empty() {
        return out;
    }
    let _ = writeln!(out, "Policy: {deny} denied, {warn} warnings");
    for f in sorted(findings) {
        let _ = writeln!(
            out,
            "  {} {}: {} [{} at {}]",
            f.level.as_str(),
            f.address.as_deref().unwrap_or("plan"),
            f.message,
            f.rule,
            f.location()
        );
    }
    out
}

/// Denies first, then by address and rule.
pub fn sorted(findings: &[Finding]) -> Vec<&Finding> {
    let mut v: Vec<&Finding> = findings.iter().collect();
    v.sort_by(|a, b| {
        (a.level, &a.address, &a.rule, &a.message).cmp(&(b.level, &b.address, &b.rule, &b.message))
    });
    v
}

/// (denies, warnings)
pub fn counts(findings: &[Finding]) -> (usize, usize) {
    let deny = findings.iter().filter(|f| f.level == Level::Deny).count();
    (deny, findings.len() - deny)
}
