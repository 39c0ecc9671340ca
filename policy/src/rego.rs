//! Rego policies through regorus, conftest's conventions.
//!
//! Every file is parsed once to find its package and its policy rules (`deny`, `warn`,
//! `violation`, and `deny_NAME`-style prefixes). To know which definition produced a finding,
//! each definition's name is then renamed in the text to a name of its own
//! (`__chimera_rule_N`, on the same line, so every other position is unchanged) and queried by
//! that name: a finding carries the line of the very definition that produced it. A rule name
//! that is also read elsewhere in its package (`count(deny) == 0`) is left as written and
//! queried whole.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chimera_model::{Code, Diagnostic, codes};
use regorus::unstable::{Rule, RuleHead};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, LimitError};
use serde::Deserialize;

use crate::{Level, Source, location};

const RENAMED: &str = "__chimera_rule_";

/// One query for findings: a policy rule definition (or a whole rule).
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// `data.PACKAGE.NAME`, with the definition's own name.
    pub path: String,
    /// Index of the file in the library's sources.
    pub file: usize,
    /// The rule's name as written (`deny`, `warn_ports`).
    pub name: String,
    pub level: Level,
    /// 1-based line of the definition.
    pub line: usize,
}

/// Rego files parsed and ready to query (rename applied).
#[derive(Clone)]
pub(crate) struct Library {
    engine: Engine,
    pub queries: Vec<Query>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("queries", &self.queries)
            .finish_non_exhaustive()
    }
}

/// A policy rule name's level: `deny`, `violation` and their `_NAME` forms deny; `warn` warns.
pub(crate) fn policy_level(name: &str) -> Option<Level> {
    let base = name
        .split_once('_')
        .map_or(name, |(b, rest)| if rest.is_empty() { name } else { b });
    match base {
        "deny" | "violation" => Some(Level::Deny),
        "warn" => Some(Level::Warn),
        _ => None,
    }
}

/// The most numbers `numbers.range` / `numbers.range_step` may produce (160 MB of values).
pub(crate) const MAX_RANGE: u64 = 10_000_000;

/// What a too-large range's error says (how it is told apart from other errors).
pub(crate) const RANGE_TOO_LARGE: &str =
    "numbers, more than the 10000000 a policy may build at once";

/// `numbers.range` and `numbers.range_step`, bounded. regorus reserves the whole array up
/// front, checking neither time nor memory inside the builtin: `numbers.range(1, 1e11)` would
/// abort the process on a failed allocation, and `numbers.range(1, 1e9)` would keep
/// allocating gigabytes after the watchdog gave up on it. Extensions are looked up before
/// builtins, so these replace them.
fn range(args: &[regorus::Value], step: bool) -> anyhow::Result<regorus::Value> {
    let name = if step {
        "numbers.range_step"
    } else {
        "numbers.range"
    };
    let (Ok(from), Ok(to)) = (args[0].as_i64(), args[1].as_i64()) else {
        // Not integers: undefined, as regorus's own builtin (non-strict).
        return Ok(regorus::Value::Undefined);
    };
    let by = if step {
        match args[2].as_i64() {
            Ok(s) if s > 0 => s,
            _ => anyhow::bail!("{name}: the step must be a positive integer"),
        }
    } else {
        1
    };
    let count = (from.abs_diff(to) / by.unsigned_abs()).saturating_add(1);
    if count > MAX_RANGE {
        anyhow::bail!("{name} over {count} {RANGE_TOO_LARGE}");
    }
    let mut values = Vec::with_capacity(count as usize);
    let mut v = i128::from(from);
    let (end, by) = (
        i128::from(to),
        if to >= from {
            i128::from(by)
        } else {
            -i128::from(by)
        },
    );
    while (by > 0 && v <= end) || (by < 0 && v >= end) {
        values.push(regorus::Value::from(v as i64));
        v += by;
    }
    Ok(regorus::Value::from(values))
}

fn new_engine(rego_v0: bool) -> Engine {
    let mut engine = Engine::new();
    engine.set_rego_v0(rego_v0);
    // Only fails when added twice.
    let _ = engine.add_extension(
        "numbers.range".into(),
        2,
        Box::new(|args: Vec<regorus::Value>| range(&args, false)),
    );
    let _ = engine.add_extension(
        "numbers.range_step".into(),
        3,
        Box::new(|args: Vec<regorus::Value>| range(&args, true)),
    );
    engine
}

/// A rule head's name: the identifier its reference starts with.
fn head_name<'t>(text: &'t str, rule: &Rule) -> Option<(usize, &'t str)> {
    let Rule::Spec { head, .. } = rule else {
        return None;
    };
    let refr = match head {
        RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => refr,
        RuleHead::Func { .. } => return None,
    };
    let start = refr.span().start as usize;
    ident_at(text, start).map(|n| (start, n))
}

fn default_name<'t>(text: &'t str, rule: &Rule) -> Option<&'t str> {
    let Rule::Default { refr, .. } = rule else {
        return None;
    };
    ident_at(text, refr.span().start as usize)
}

fn ident_at(text: &str, start: usize) -> Option<&str> {
    let rest = text.get(start..)?;
    let len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    (len > 0).then(|| &rest[..len])
}

/// Byte offsets of every identifier in Rego text, outside strings and comments.
fn identifiers(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i += 1;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                out.push((start, &text[start..i]));
            }
            _ => i += 1,
        }
    }
    out
}

/// What one file holds, from the parse.
struct Parsed {
    /// `data.chimera…`
    package: String,
    /// (offset, name, line) of every policy rule definition.
    heads: Vec<(usize, String, usize)>,
    /// Policy rule names with a `default` (queried whole).
    defaults: BTreeSet<String>,
    /// Every function definition: name, the byte range of its text, its head's offset, line
    /// and column.
    functions: Vec<Function>,
}

struct Function {
    name: String,
    text: std::ops::Range<usize>,
    head: usize,
    line: usize,
    col: usize,
}

fn function_head<'t>(text: &'t str, rule: &Rule) -> Option<(usize, &'t str)> {
    let Rule::Spec {
        head: RuleHead::Func { refr, .. },
        ..
    } = rule
    else {
        return None;
    };
    let start = refr.span().start as usize;
    ident_at(text, start).map(|n| (start, n))
}

/// The dotted reference an identifier at `offset` is the last part of (`data.chimera.` for
/// `data.chimera.f`), or "".
fn dotted_prefix(text: &str, offset: usize) -> &str {
    let bytes = text.as_bytes();
    let mut start = offset;
    while start > 0 && bytes[start - 1] == b'.' {
        let mut i = start - 1;
        while i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            i -= 1;
        }
        if i == start - 1 {
            break;
        }
        start = i;
    }
    &text[start..offset]
}

/// Rego forbids recursion (OPA refuses it when compiling); regorus would recurse until the
/// thread's stack overflows, which aborts the process. Finds every function that calls
/// itself, directly or through other functions of its package.
fn recursion(sources: &[Source], files: &[usize], parsed: &[Parsed]) -> Vec<Diagnostic> {
    // (package, function) -> the functions it calls, and where it is first defined.
    let mut calls: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut first: BTreeMap<(String, String), (usize, usize, usize)> = BTreeMap::new();
    for (&i, p) in files.iter().zip(parsed) {
        for f in &p.functions {
            calls
                .entry((p.package.clone(), f.name.clone()))
                .or_default();
            first
                .entry((p.package.clone(), f.name.clone()))
                .or_insert((i, f.line, f.col));
        }
    }
    let local = |p: &Parsed, prefix: &str| prefix.is_empty() || prefix == format!("{}.", p.package);
    for (&i, p) in files.iter().zip(parsed) {
        let text = &sources[i].text;
        for f in &p.functions {
            let body = &text[f.text.clone()];
            for (offset, id) in identifiers(body) {
                let at = f.text.start + offset;
                let called = text[at + id.len()..].trim_start().starts_with('(');
                if at == f.head || !called || !local(p, dotted_prefix(text, at)) {
                    continue;
                }
                if calls.contains_key(&(p.package.clone(), id.to_string())) {
                    calls
                        .entry((p.package.clone(), f.name.clone()))
                        .or_default()
                        .insert(id.to_string());
                }
            }
        }
    }
    let mut diags = Vec::new();
    for ((package, name), &(file, line, col)) in &first {
        // Can `name` reach itself?
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = calls[&(package.clone(), name.clone())].iter().collect();
        let mut found = false;
        while let Some(next) = todo.pop() {
            if next == name {
                found = true;
                break;
            }
            if seen.insert(next.clone())
                && let Some(more) = calls.get(&(package.clone(), next.clone()))
            {
                todo.extend(more.iter());
            }
        }
        if found {
            diags.push(
                Diagnostic::error(codes::POLICY_RECURSION, "recursive Rego function")
                    .detail(format!(
                        "`{name}` calls itself, directly or through other functions, and Rego forbids recursion (OPA refuses it too); iterate with a comprehension or `some`, or walk nested data with `walk`"
                    ))
                    .at(Some(location(&sources[file].shown, line, col))),
            );
        }
    }
    diags
}

/// Parses `sources[i]` for every index in `files`; checks packages unless `tests` (test files
/// may use any package).
fn parse(
    sources: &[Source],
    files: &[usize],
    rego_v0: bool,
    any_package: impl Fn(&Source) -> bool,
) -> Result<Vec<Parsed>, Vec<Diagnostic>> {
    let mut parser = new_engine(rego_v0);
    let mut diags = Vec::new();
    let mut out = Vec::new();
    for &i in files {
        let src = &sources[i];
        let package = match parser.add_policy(src.shown.clone(), src.text.to_string()) {
            Ok(p) => p,
            Err(e) => {
                diags.push(error_diag(
                    codes::POLICY_SYNTAX,
                    "Rego syntax error",
                    &e,
                    &src.shown,
                    1,
                    if rego_v0 {
                        "fix the syntax at this position"
                    } else {
                        "fix the syntax at this position; a policy written for Rego v0 (rules without `if` / `contains`) needs `import rego.v1` rewrites, or set rego_v0 (`--rego-v0`) to accept the older syntax"
                    },
                ));
                continue;
            }
        };
        let modules = parser.get_modules();
        let Some(module) = modules.last() else {
            continue;
        };
        let text = &src.text;
        if !(package == "data.chimera" || package.starts_with("data.chimera.") || any_package(src))
        {
            let span = module.package.span.clone();
            let written = package.strip_prefix("data.").unwrap_or(&package);
            diags.push(
                Diagnostic::error(codes::POLICY_PACKAGE, "policy package is not `chimera`")
                    .detail(format!(
                        "`package {written}`: Chimera evaluates the rules of `package chimera` (or `package chimera.NAME`), as conftest evaluates `package main`; write `package chimera`"
                    ))
                    .at(Some(location(&src.shown, span.line as usize, span.col as usize))),
            );
            continue;
        }
        let mut heads = Vec::new();
        let mut defaults = BTreeSet::new();
        let mut functions = Vec::new();
        for rule in &module.policy {
            if let Some((head, name)) = function_head(text, rule) {
                let span = rule.span();
                let head_span = match rule.as_ref() {
                    Rule::Spec {
                        head: RuleHead::Func { refr, .. },
                        ..
                    } => refr.span().clone(),
                    _ => span.clone(),
                };
                functions.push(Function {
                    name: name.to_string(),
                    text: span.start as usize..(span.end as usize).min(text.len()),
                    head,
                    line: head_span.line as usize,
                    col: head_span.col as usize,
                });
            }
            if let Some((offset, name)) = head_name(text, rule)
                && policy_level(name).is_some()
            {
                heads.push((offset, name.to_string(), rule.span().line as usize));
            }
            if let Some(name) = default_name(text, rule)
                && policy_level(name).is_some()
            {
                defaults.insert(name.to_string());
            }
        }
        out.push(Parsed {
            package,
            heads,
            defaults,
            functions,
        });
    }
    if diags.is_empty() {
        let indices: Vec<usize> = files.to_vec();
        diags = recursion(sources, &indices, &out);
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

/// Loads the policy files `files` (indices into `sources`).
pub(crate) fn load(
    sources: &[Source],
    files: &[usize],
    rego_v0: bool,
) -> Result<Library, Vec<Diagnostic>> {
    let parsed = parse(sources, files, rego_v0, |_| false)?;
    // A (package, name) is queried whole when it has a default or is read anywhere in its
    // package other than at its heads.
    let mut whole: BTreeSet<(String, String)> = BTreeSet::new();
    let mut head_offsets: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (&i, p) in files.iter().zip(&parsed) {
        for d in &p.defaults {
            whole.insert((p.package.clone(), d.clone()));
        }
        head_offsets
            .entry(i)
            .or_default()
            .extend(p.heads.iter().map(|h| h.0));
    }
    let names: BTreeSet<(String, String)> = parsed
        .iter()
        .flat_map(|p| p.heads.iter().map(|h| (p.package.clone(), h.1.clone())))
        .collect();
    for (&i, p) in files.iter().zip(&parsed) {
        let heads = &head_offsets[&i];
        for (offset, id) in identifiers(&sources[i].text) {
            if !heads.contains(&offset) && names.contains(&(p.package.clone(), id.to_string())) {
                whole.insert((p.package.clone(), id.to_string()));
            }
        }
    }

    let mut engine = new_engine(rego_v0);
    let mut queries = Vec::new();
    let mut queried_whole = BTreeSet::new();
    for (&i, p) in files.iter().zip(&parsed) {
        let src = &sources[i];
        let mut text = src.text.to_string();
        let mut renames = Vec::new();
        for (offset, name, line) in &p.heads {
            let level = policy_level(name).unwrap_or(Level::Deny);
            let key = (p.package.clone(), name.clone());
            if whole.contains(&key) {
                if queried_whole.insert(key) {
                    queries.push(Query {
                        path: format!("{}.{name}", p.package),
                        file: i,
                        name: name.clone(),
                        level,
                        line: *line,
                    });
                }
                continue;
            }
            let renamed = format!("{RENAMED}{}", queries.len());
            renames.push((*offset, name.len(), renamed.clone()));
            queries.push(Query {
                path: format!("{}.{renamed}", p.package),
                file: i,
                name: name.clone(),
                level,
                line: *line,
            });
        }
        renames.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (offset, len, renamed) in renames {
            text.replace_range(offset..offset + len, &renamed);
        }
        if let Err(e) = engine.add_policy(src.shown.clone(), text) {
            // The original parsed: renaming broke it, which is a bug here.
            return Err(vec![error_diag(
                codes::INTERNAL,
                "policy rules cannot be prepared",
                &e,
                &src.shown,
                1,
                "this is a bug in Chimera; please report it with the policy file",
            )]);
        }
    }
    Ok(Library { engine, queries })
}

/// A query's failure.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub query: usize,
    pub message: String,
    pub time_limit: bool,
}

/// Evaluates every query on `input` until `deadline` (regorus's own timer; the caller's
/// watchdog stays the backstop). Writes the query being evaluated to `progress`.
pub(crate) fn evaluate(
    lib: &Library,
    input: &serde_json::Value,
    deadline: Instant,
    progress: &AtomicUsize,
) -> Vec<Result<serde_json::Value, Failure>> {
    let mut engine = lib.engine.clone();
    match regorus::Value::deserialize(input) {
        Ok(v) => engine.set_input(v),
        Err(e) => {
            return vec![Err(Failure {
                query: 0,
                message: format!("the input document cannot be read: {e}"),
                time_limit: false,
            })];
        }
    }
    let mut out = Vec::with_capacity(lib.queries.len());
    for (i, q) in lib.queries.iter().enumerate() {
        progress.store(i, Ordering::Relaxed);
        let remaining = deadline.saturating_duration_since(Instant::now());
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: remaining,
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        });
        match engine.eval_rule(q.path.clone()) {
            Ok(v) => out.push(to_json(&v).map_err(|message| Failure {
                query: i,
                message,
                time_limit: false,
            })),
            Err(e) => {
                let time_limit = matches!(
                    e.downcast_ref::<LimitError>(),
                    Some(LimitError::TimeLimitExceeded { .. })
                );
                out.push(Err(Failure {
                    query: i,
                    message: format!("{e}"),
                    time_limit,
                }));
                if time_limit {
                    break;
                }
            }
        }
    }
    out
}

fn to_json(v: &regorus::Value) -> Result<serde_json::Value, String> {
    if *v == regorus::Value::Undefined {
        return Ok(serde_json::Value::Null);
    }
    serde_json::to_value(v).map_err(|e| format!("the rule's value cannot be read: {e}"))
}

/// One Rego unit test (`test_*` rule).
#[derive(Debug, Clone)]
pub(crate) struct TestRule {
    pub file: usize,
    pub path: String,
    pub name: String,
}

/// Every file (policies and `*_test.rego`) in one engine as written, with its `test_*` rules.
pub(crate) fn load_tests(
    sources: &[Source],
    files: &[usize],
    rego_v0: bool,
) -> Result<(Engine, Vec<TestRule>), Vec<Diagnostic>> {
    let parsed = parse(sources, files, rego_v0, |s| s.is_test)?;
    let mut engine = new_engine(rego_v0);
    let mut tests = Vec::new();
    let mut seen = BTreeSet::new();
    for (&i, p) in files.iter().zip(&parsed) {
        let src = &sources[i];
        if let Err(e) = engine.add_policy(src.shown.clone(), src.text.to_string()) {
            return Err(vec![error_diag(
                codes::POLICY_SYNTAX,
                "Rego syntax error",
                &e,
                &src.shown,
                1,
                "fix the syntax at this position",
            )]);
        }
        let modules = engine.get_modules();
        let Some(module) = modules.last() else {
            continue;
        };
        for rule in &module.policy {
            if let Some((_, name)) = head_name(&src.text, rule)
                && name.starts_with("test_")
                && seen.insert((p.package.clone(), name.to_string()))
            {
                tests.push(TestRule {
                    file: i,
                    path: format!("{}.{name}", p.package),
                    name: name.to_string(),
                });
            }
        }
    }
    Ok((engine, tests))
}

/// Runs each test with `timeout` per test: `Ok(())` when it is `true`, else why not.
pub(crate) fn run_test(
    engine: &mut Engine,
    test: &TestRule,
    timeout: std::time::Duration,
) -> Result<(), String> {
    engine.set_input(regorus::Value::new_object());
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: timeout,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    });
    match engine.eval_rule(test.path.clone()) {
        Ok(v) if v == regorus::Value::from(true) => Ok(()),
        Ok(regorus::Value::Undefined) => {
            Err("the test is undefined (a condition in its body is false)".into())
        }
        Ok(v) => Err(format!(
            "the test's value is {}, not true",
            to_json(&v).map_or_else(|e| e, |j| j.to_string())
        )),
        Err(e) => Err(match e.downcast_ref::<LimitError>() {
            Some(LimitError::TimeLimitExceeded { .. }) => {
                format!("the test took longer than {:.1} s", timeout.as_secs_f64())
            }
            _ => error_message(&e.to_string()),
        }),
    }
}

/// A regorus error's message without its source excerpt.
pub(crate) fn error_message(text: &str) -> String {
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text);
    last.strip_prefix("error: ")
        .unwrap_or(last)
        .trim()
        .to_string()
}

/// The `--> FILE:LINE:COL` regorus writes in its messages.
pub(crate) fn error_position(text: &str) -> Option<(String, usize, usize)> {
    let at = text.find("--> ")?;
    let line = text[at + 4..].lines().next()?;
    let mut parts = line.rsplitn(3, ':');
    let col = parts.next()?.trim().parse().ok()?;
    let row = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.to_string();
    Some((file, row, col))
}

/// A diagnostic for a regorus error, at the position it names or at `file:line`.
pub(crate) fn error_diag(
    code: Code,
    summary: &str,
    e: &dyn std::fmt::Display,
    file: &str,
    line: usize,
    fix: &str,
) -> Diagnostic {
    let text = e.to_string();
    let (file, line, col) = error_position(&text).unwrap_or((file.to_string(), line, 1));
    Diagnostic::error(code, summary)
        .detail(format!("{}; {fix}", error_message(&text)))
        .at(Some(location(&file, line, col)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rule_names_and_levels() {
        assert_eq!(policy_level("deny"), Some(Level::Deny));
        assert_eq!(policy_level("violation"), Some(Level::Deny));
        assert_eq!(policy_level("deny_ssh"), Some(Level::Deny));
        assert_eq!(policy_level("warn"), Some(Level::Warn));
        assert_eq!(policy_level("warn_cost"), Some(Level::Warn));
        assert_eq!(policy_level("deny_"), None);
        assert_eq!(policy_level("denied"), None);
        assert_eq!(policy_level("allow"), None);
    }

    #[test]
    fn ranges_are_bounded() {
        let n = |i: i64| regorus::Value::from(i);
        let nums = |v: regorus::Value| -> Vec<i64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        };
        assert_eq!(nums(range(&[n(1), n(4)], false).unwrap()), [1, 2, 3, 4]);
        assert_eq!(nums(range(&[n(3), n(1)], false).unwrap()), [3, 2, 1]);
        assert_eq!(nums(range(&[n(1), n(6), n(2)], true).unwrap()), [1, 3, 5]);
        assert_eq!(nums(range(&[n(6), n(1), n(2)], true).unwrap()), [6, 4, 2]);
        assert!(range(&[n(1), n(2), n(0)], true).is_err());
        let big = range(&[n(1), n(1_000_000_000)], false).unwrap_err();
        assert!(big.to_string().contains(RANGE_TOO_LARGE), "{big}");
        assert!(range(&[n(i64::MIN), n(i64::MAX)], false).is_err());
    }

    #[test]
    fn identifiers_skip_strings_and_comments() {
        let text = "deny contains \"deny\" if { # deny\n x := `deny` ; count(deny) }";
        let ids: Vec<_> = identifiers(text).into_iter().map(|(_, s)| s).collect();
        assert_eq!(ids, ["deny", "contains", "if", "x", "count", "deny"]);
    }

    #[test]
    fn positions_are_read_from_regorus_messages() {
        let msg = "\n--> p/a.rego:3:5\n  |\n3 | x\n  |   ^\nerror: oops";
        assert_eq!(error_position(msg), Some(("p/a.rego".into(), 3, 5)));
        assert_eq!(error_message(msg), "oops");
    }
}
