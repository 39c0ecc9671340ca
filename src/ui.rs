//! Terminal concerns: colour choice, diagnostic output and exit statuses.

use std::io::{IsTerminal, Write};

use chimera_model::{Diagnostic, SourceMap};
use clap::ValueEnum;

/// How the process exits: `Success` (0), `Failure` (1: diagnostics or an error), and, for
/// `--detailed-exitcode`, `Changes` (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    Failure,
    /// `--detailed-exitcode`: success, and the plan has changes.
    Changes,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Changes => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ErrorFormat {
    /// Human-readable, with source snippets.
    Text,
    /// One JSON document on stderr: `{ "diagnostics": [...] }` (docs/diagnostics.md).
    Json,
}

pub fn use_color(choice: ColorChoice, stream_is_tty: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stream_is_tty && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// Writes a workflow error: its diagnostics, then its hints (text) or a `hints` array (JSON).
pub fn emit_error(e: &chimera_workflow::Error, format: ErrorFormat, color: ColorChoice) {
    match format {
        ErrorFormat::Json => {
            let doc = serde_json::json!({
                "diagnostics": e.diagnostics,
                "kind": format!("{:?}", e.kind).to_lowercase(),
                "hints": e.hints,
            });
            let _ = writeln!(std::io::stderr().lock(), "{doc}");
        }
        ErrorFormat::Text => emit_diagnostics(&e.diagnostics, &e.sources, format, color),
    }
}

/// Writes diagnostics to stderr in the chosen format.
pub fn emit_diagnostics(
    diagnostics: &[Diagnostic],
    sources: &SourceMap,
    format: ErrorFormat,
    color: ColorChoice,
) {
    let mut err = std::io::stderr().lock();
    match format {
        ErrorFormat::Json => {
            let doc = serde_json::json!({ "diagnostics": diagnostics });
            let _ = writeln!(err, "{doc}");
        }
        ErrorFormat::Text => {
            let color = use_color(color, std::io::stderr().is_terminal());
            let _ = write!(err, "{}", sources.render(diagnostics, color));
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            if errors > 0 {
                let _ = writeln!(
                    err,
                    "error: {errors} problem{} found",
                    if errors == 1 { "" } else { "s" }
                );
            }
        }
    }
}

/// Cloud resources as `ID<TAB>KIND<TAB>ADDRESS` lines.
pub fn inventory(found: &[chimera_providers::Observed]) -> String {
    found
        .iter()
        .map(|o| {
            let addr = o
                .tags
                .get(chimera_providers::TAG_ADDRESS)
                .map(String::as_str)
                .unwrap_or_default();
            format!("{}\t{}\t{addr}\n", o.cloud_id, o.kind)
        })
        .collect()
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Apply progress: a bar on a terminal, one line per finished step otherwise.
pub struct ApplyProgress {
    bar: Option<indicatif::ProgressBar>,
}

impl ApplyProgress {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        });
        ApplyProgress { bar }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl chimera_workflow::Progress for ApplyProgress {
    fn total(&self, steps: usize) {
        if let Some(b) = &self.bar {
            b.set_length(steps as u64);
        }
    }
    fn started(&self, step: &chimera_workflow::Step) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{} {}", step.kind.as_str(), step.address));
        }
    }
    fn finished(
        &self,
        step: &chimera_workflow::Step,
        error: Option<&chimera_workflow::CallFailure>,
    ) {
        let line = match error {
            None => format!("{}: {} done", step.address, step.kind.as_str()),
            Some(e) => format!("{}: {} FAILED: {e}", step.address, step.kind.as_str()),
        };
        match &self.bar {
            Some(b) => {
                b.inc(1);
                if error.is_some() {
                    b.println(line);
                }
            }
            None => eprintln!("{line}"),
        }
    }
}
