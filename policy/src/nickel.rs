//! Nickel policies through nickel-lang-core.
//!
//! A policy file evaluates to a record `{ deny = fun plan => [...], warn = fun plan => [...] }`
//! (either field optional) or to a bare function, which denies. The plan document is built
//! into a Nickel value directly from the JSON value (no text to parse) and bound to a variable
//! the generated entry applies the policy to.
//!
//! Nickel values are `!Send`: everything here runs on the caller's (worker) thread, and the
//! caller enforces the limits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use chimera_model::{Code, Diagnostic, Location, SourceFile, codes};
use nickel_lang_core::cache::{CacheHub, ImportResolver, InputFormat, SourcePath};
use nickel_lang_core::error::{Error as NickelError, IntoDiagnostics, NullReporter};
use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::eval::value::{Container, NickelValue, ValueContentRef};
use nickel_lang_core::eval::{VirtualMachine, VmContext};
use nickel_lang_core::files::{FileId, Files};
use nickel_lang_core::identifier::Ident;
use nickel_lang_core::position::TermPos;
use serde::Deserialize;

use crate::location;

/// The variable the generated entry binds the plan document to.
const PLAN_VAR: &str = "__chimera_plan";

/// A policy's form, found when it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Form {
    /// A bare function: it denies.
    Function { line: Option<usize> },
    /// A record with `deny` and/or `warn` (the line of each field).
    Record {
        deny: Option<Option<usize>>,
        warn: Option<Option<usize>>,
    },
}

/// What a Nickel job needs of one file (plain data: sent to the worker).
#[derive(Debug, Clone)]
pub(crate) struct File {
    pub abs: PathBuf,
    pub shown: String,
    pub text: String,
}

/// The helpers a policy imports as `chimera-policy.ncl` (docs/policy.md), held in memory
/// under a directory that exists nowhere on disk.
const PRELUDE: &str = include_str!("prelude.ncl");
const PRELUDE_DIR: &str = "/%chimera-policy%";
pub(crate) const PRELUDE_NAME: &str = "chimera-policy.ncl";

fn context(files: &[File]) -> (VmContext<CacheHub, CacheImpl>, Vec<FileId>) {
    let mut cache = CacheHub::new();
    cache.sources.add_string(
        SourcePath::Path(
            Path::new(PRELUDE_DIR).join(PRELUDE_NAME),
            InputFormat::Nickel,
        ),
        PRELUDE.to_string(),
    );
    cache
        .sources
        .add_import_paths(std::iter::once(PathBuf::from(PRELUDE_DIR)));
    let ids = files
        .iter()
        .map(|f| {
            cache.sources.add_string(
                SourcePath::Path(f.abs.clone(), InputFormat::Nickel),
                f.text.clone(),
            )
        })
        .collect();
    (VmContext::new(cache, std::io::sink(), NullReporter {}), ids)
}

/// Loads one policy: it must parse, typecheck, and be a record of `deny` / `warn` functions or
/// a function.
pub(crate) fn inspect(file: &File) -> Result<Form, Vec<Diagnostic>> {
    let (mut ctxt, ids) = context(std::slice::from_ref(file));
    let names = [file.clone()];
    let fail = |e: NickelError, ctxt: &VmContext<CacheHub, CacheImpl>| {
        let mut files = ctxt.import_resolver.files().clone();
        diagnostics(e, &mut files, &names)
    };
    let prepared = match ctxt.prepare_eval(ids[0]) {
        Ok(p) => p,
        Err(e) => return Err(fail(e, &ctxt)),
    };
    let evaluated = VirtualMachine::new(&mut ctxt).eval(prepared);
    let value = match evaluated {
        Ok(v) => v,
        Err(e) => return Err(fail(e.into(), &ctxt)),
    };
    let line_of = |pos: TermPos| match pos {
        TermPos::Original(s) | TermPos::Inherited(s) if s.src_id == ids[0] => Some(
            SourceFile::new("", file.text.as_str().into())
                .line_col(s.start.to_usize() as u32)
                .0,
        ),
        _ => None,
    };
    let not_a_policy = |what: String, line: Option<usize>| {
        vec![
            Diagnostic::error(codes::NOT_A_POLICY, "not a policy")
                .detail(format!(
                    "{what}; a Nickel policy is a record `{{ deny = fun plan => [...], warn = fun plan => [...] }}` (either field may be left out) or a function `fun plan => [...]` that denies; put helpers in a subdirectory and import them"
                ))
                .at(Some(location(&file.shown, line.unwrap_or(1), 1))),
        ]
    };
    if value.type_of() == Some("Function") {
        return Ok(Form::Function {
            line: line_of(value.pos(&ctxt.pos_table)),
        });
    }
    let record = match value.content_ref() {
        ValueContentRef::Record(Container::Alloc(record)) => record.clone(),
        ValueContentRef::Record(Container::Empty) => {
            return Err(not_a_policy("the file is an empty record".into(), None));
        }
        _ => {
            return Err(not_a_policy(
                format!(
                    "the file evaluates to a value of type {}",
                    value.type_of().unwrap_or("unknown")
                ),
                line_of(value.pos(&ctxt.pos_table)),
            ));
        }
    };
    let (mut deny, mut warn) = (None, None);
    let mut errors = Vec::new();
    for (id, field) in &record.fields {
        let name = id.label();
        let line = line_of(id.pos);
        let slot = match name {
            "deny" => &mut deny,
            "warn" => &mut warn,
            other => {
                errors.extend(not_a_policy(
                    format!(
                        "the record has a field `{other}`, and a policy has only `deny` and `warn`"
                    ),
                    line,
                ));
                continue;
            }
        };
        let Some(v) = &field.value else {
            continue;
        };
        let forced = VirtualMachine::new(&mut ctxt).eval(v.clone());
        match forced {
            Ok(f) if f.type_of() == Some("Function") => *slot = Some(line),
            Ok(f) => errors.extend(not_a_policy(
                format!(
                    "`{name}` is a value of type {}, not a function of the plan",
                    f.type_of().unwrap_or("unknown")
                ),
                line,
            )),
            Err(e) => errors.extend(fail(e.into(), &ctxt)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if deny.is_none() && warn.is_none() {
        return Err(not_a_policy(
            "the record has neither `deny` nor `warn`".into(),
            None,
        ));
    }
    Ok(Form::Record { deny, warn })
}

use chimera_compiler::eval::nickel_string;

fn entry(file: &File, form: &Form) -> String {
    let p = format!("(import {})", nickel_string(&file.abs.to_string_lossy()));
    let (deny, warn) = match form {
        Form::Function { .. } => (format!("{p} {PLAN_VAR}"), "[]".to_string()),
        Form::Record { deny, warn } => (
            deny.map_or("[]".into(), |_| format!("{p}.deny {PLAN_VAR}")),
            warn.map_or("[]".into(), |_| format!("{p}.warn {PLAN_VAR}")),
        ),
    };
    format!("{{ deny = {deny}, warn = {warn} }}")
}

const ENTRY_NAME: &str = "<chimera policy entry>";

/// Evaluates each policy on `input`: its `{ deny, warn }` as JSON, or its diagnostics.
/// Writes the index of the policy being evaluated to `progress`.
pub(crate) fn evaluate(
    files: &[(File, Form)],
    input: &serde_json::Value,
    progress: &AtomicUsize,
) -> Vec<Result<serde_json::Value, Vec<Diagnostic>>> {
    let plain: Vec<File> = files.iter().map(|(f, _)| f.clone()).collect();
    let (ctxt, _) = context(&plain);
    let plan = match NickelValue::deserialize(input) {
        Ok(v) => v,
        Err(e) => {
            let d = Diagnostic::error(codes::INTERNAL, "the plan cannot be given to Nickel")
                .detail(format!("{e}; this is a bug in Chimera, please report it"));
            return files.iter().map(|_| Err(vec![d.clone()])).collect();
        }
    };
    let mut ctxt = ctxt.with_extend_env(vec![(Ident::new(PLAN_VAR), plan)]);
    let mut out = Vec::with_capacity(files.len());
    for (i, (file, form)) in files.iter().enumerate() {
        progress.store(i, Ordering::Relaxed);
        let id = ctxt.import_resolver.sources.add_string(
            SourcePath::Generated(format!("{ENTRY_NAME} {i}")),
            entry(file, form),
        );
        let result = ctxt
            .prepare_eval(id)
            .and_then(|p| Ok(VirtualMachine::new(&mut ctxt).eval_full_for_export(p)?))
            .map_err(|e| {
                let mut nfiles = ctxt.import_resolver.files().clone();
                diagnostics(e, &mut nfiles, &plain)
            })
            .and_then(|v| {
                serde_json::to_value(&v).map_err(|e| {
                    vec![
                        Diagnostic::error(codes::POLICY_RESULT, "a policy's result cannot be read")
                            .detail(format!("{e}; a policy returns an array of records `{{ rule, address, message }}` or of strings"))
                            .at(Some(location(&file.shown, 1, 1))),
                    ]
                })
            });
        out.push(result);
    }
    out
}

/// Exports a Nickel file (a test file) to JSON.
pub(crate) fn export(file: &File) -> Result<serde_json::Value, Vec<Diagnostic>> {
    let (mut ctxt, ids) = context(std::slice::from_ref(file));
    let names = [file.clone()];
    let value = ctxt
        .prepare_eval(ids[0])
        .and_then(|p| Ok(VirtualMachine::new(&mut ctxt).eval_full_for_export(p)?));
    match value {
        Ok(v) => serde_json::to_value(&v).map_err(|e| {
            vec![
                Diagnostic::error(codes::POLICY_TEST_INVALID, "a test file cannot be exported")
                    .detail(format!("{e}; a test file is a record of plain data cases"))
                    .at(Some(location(&file.shown, 1, 1))),
            ]
        }),
        Err(e) => {
            let mut nfiles = ctxt.import_resolver.files().clone();
            Err(diagnostics(e, &mut nfiles, &names))
        }
    }
}

/// Nickel's error as located diagnostics, in our files' names.
fn diagnostics(e: NickelError, files: &mut Files, ours: &[File]) -> Vec<Diagnostic> {
    let code: Code = match &e {
        NickelError::ParseErrors(_) => codes::POLICY_SYNTAX,
        _ => codes::POLICY_EVAL,
    };
    let summary = match &e {
        NickelError::ParseErrors(_) => "Nickel syntax error",
        NickelError::TypecheckError(_) => "Nickel type error in a policy",
        NickelError::ImportError(_) => "a policy's import cannot be resolved",
        _ => "Nickel policy failed",
    };
    let raw = e.into_diagnostics(files);
    let files: &Files = files;
    let name_of = |id: FileId| -> Option<String> {
        let raw = files.name(id).to_string_lossy().into_owned();
        if raw.starts_with(ENTRY_NAME) {
            return None;
        }
        Some(
            ours.iter()
                .find(|f| Path::new(&raw) == f.abs)
                .map(|f| f.shown.clone())
                .unwrap_or(raw),
        )
    };
    let mut out = Vec::new();
    for d in raw {
        let mut diag = Diagnostic::error(code, summary);
        let mut detail = d.message.clone();
        let mut labels: Vec<_> = d.labels.iter().collect();
        // Primary labels first, and our files before Nickel's stdlib.
        labels.sort_by_key(|l| {
            (
                l.style != codespan_reporting::diagnostic::LabelStyle::Primary,
                files.is_stdlib(l.file_id),
            )
        });
        let mut primary: Option<Location> = None;
        for l in labels {
            let Some(name) = name_of(l.file_id) else {
                continue;
            };
            let text = files.source(l.file_id);
            let sf = SourceFile::new(name.clone(), text.into());
            let (line, column) = sf.line_col(l.range.start as u32);
            let (end_line, end_column) = sf.line_col(l.range.end as u32);
            let loc = Location {
                file: name,
                line,
                column,
                end_line,
                end_column,
                span: None,
            };
            if primary.is_none() {
                if !l.message.is_empty() {
                    detail = format!("{detail}: {}", l.message);
                }
                primary = Some(loc);
            } else {
                diag = diag.label(Some(loc), l.message.clone());
            }
        }
        for n in &d.notes {
            diag = diag.note(n.clone());
        }
        let fix = match code {
            c if c == codes::POLICY_SYNTAX => "fix the syntax at this position",
            _ => "fix the policy at this position; `nickel eval` on a small plan reproduces it",
        };
        diag.detail = format!("{detail}; {fix}");
        out.push(diag.at(primary));
    }
    if out.is_empty() {
        out.push(Diagnostic::error(code, summary).detail("evaluation failed"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_apply_the_forms() {
        let f = File {
            abs: "/p/a.ncl".into(),
            shown: "a.ncl".into(),
            text: String::new(),
        };
        assert_eq!(
            entry(&f, &Form::Function { line: None }),
            "{ deny = (import \"/p/a.ncl\") __chimera_plan, warn = [] }"
        );
        assert_eq!(
            entry(
                &f,
                &Form::Record {
                    deny: None,
                    warn: Some(Some(3))
                }
            ),
            "{ deny = [], warn = (import \"/p/a.ncl\").warn __chimera_plan }"
        );
    }
}
