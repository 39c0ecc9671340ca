//! The fuzzer (issue #19): mutates the compiler's corpus (`compiler/tests/inputs`), state
//! fixtures (`tests/NAME.state.json`, as `chimera test` reads them) and plan files (as `apply
//! FILE` reads them), and runs each mutant through what Chimera does with it: compile (under the
//! CLI's default evaluation limits), read the fixture and plan against it, read the plan file,
//! and render every plan as text, JSON and Markdown.
//!
//! A finding is a panic, a case that outlives the evaluation limits (a hang: a watchdog thread
//! catches one that never returns, writes its input and ends the run), an internal error
//! (E0010), a diagnostic without a place (the compiler's: one left at the stack file's first
//! line by the fallback, other than the limits and an unreadable stack; the fixture reader's; a
//! plan file's diagnostic must name the file), a flood (more than [`FOLD_KEEP`] of one kind
//! kept, more than [`MAX_DIAGNOSTICS`], or a rendering over [`MAX_RENDERED`] bytes), or an
//! evaluation a limit stopped that leaves the process unable to compile (its worker still
//! running, or its memory still held). Each finding's input is written to
//! `target/fuzz-findings/` to become a corpus case once fixed.
//!
//! Mutations are drawn by proptest (deterministic for a seed): byte edits (delete, insert,
//! duplicate, overwrite, splice in a token of Nickel or JSON), for Nickel whole-token
//! replacements by values, and for JSON edits of the parsed document (replace, remove or
//! duplicate a node), so mutants get past the parser as well as into it. Inputs whose corpus header sets their own limits (`# timeout-ms`, `# memory-mib`:
//! loops on purpose) are not mutated.
//!
//! Plan files are read as `apply FILE` reads them with a key configured: sealed ones (mutating
//! an envelope) and plain ones.
//!
//! Run: `cargo bench -p chimera-workflow --bench fuzz -- [--cases N] [--seed S]`
//! (release; 10,000 cases by default). Prints what the mutants did (how many were left
//! unchanged, compiled, or stopped at which code) so a run that tests nothing shows. Exit status
//! 1 when anything was found.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chimera_compiler::{Disk, EvalOptions, Graph, Source};
use chimera_model::diagnostic::FOLD_KEEP;
use chimera_model::{Diagnostic, StateResource, codes};
use chimera_plans::markdown::{MarkdownOptions, plan_markdown};
use chimera_plans::plan::{self, Plan, Prior};
use chimera_plans::{PlanFile, render};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// More diagnostics than this from one mutant of a small input is a flood.
const MAX_DIAGNOSTICS: usize = 100;
/// A rendering of one mutant's diagnostics or plan longer than this is a flood.
const MAX_RENDERED: usize = 1 << 20;
/// A case still running this long after it started is a hang (beyond the evaluation timeout).
const HANG_GRACE: Duration = Duration::from_secs(30);

/// Tokens spliced into Nickel mutants.
const NICKEL_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "=",
    ",",
    ";",
    "\"",
    "'",
    ".",
    "|",
    "&",
    "=>",
    "let ",
    " in ",
    "fun ",
    "rec ",
    "import ",
    "null",
    "true",
    "%{",
    "}%",
    "m%\"",
    "\"%",
    "-1",
    "0",
    "1e308",
    "4294967296",
    "-9007199254740993",
    "0.5",
    "std.array.generate (fun i => i) 100000",
    "std.fail_with \"x\"",
    "resources",
    "stack",
    "kind",
    "name",
    "cidr",
    "\"10.0.0.0/8\"",
    "\"0.0.0.0/0\"",
    "'cheapest",
    "outputs.id",
    "lifecycle",
    "sensitive",
    "modules",
    "providers",
    "# ",
    "\n",
    "\u{e9}",
    "\u{1F600}",
    "\u{0}",
    "\\",
    "\u{ff}",
];

/// Tokens spliced into JSON mutants.
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "null",
    "true",
    "false",
    "-1",
    "0",
    "1e400",
    "-0",
    "18446744073709551616",
    "\"\"",
    "\"network.main\"",
    "\"instance.\"",
    "\"$sensitive\"",
    "\"${chimera:network.main.id}\"",
    "\\u0000",
    "\\ud800",
    "\n",
    "\u{e9}",
];

/// Values a whole Nickel token (a word, a number, a string literal) is replaced with: mutants
/// that still parse, so they reach evaluation, contracts and lowering.
const NICKEL_VALUES: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "65536",
    "1e308",
    "0.5",
    "\"\"",
    "\"x\"",
    "\"10.0.0.0/8\"",
    "\"10.0.0.1/33\"",
    "\"network.main\"",
    "\"${chimera:network.main.id}\"",
    "[]",
    "{}",
    "[1, 2]",
    "'cheapest",
    "'local",
    "'aws",
    "'gcp",
    "'small",
    "'tcp",
    "(fun x => x)",
    "{ kind = \"network\" }",
    "std.array.generate (fun i => i) 3",
    "(std.array.generate (fun i => { name = \"n%{std.to_string i}\" }) 5000)",
    "(std.array.generate (fun i => i) 100000)",
];

/// The byte range of the Nickel token at or after `at`: a string literal (to the next quote on
/// its line), else a run of word characters (identifiers, numbers, `'enum` tags, `a.b` paths).
fn token_at(text: &[u8], at: usize) -> Option<(usize, usize)> {
    let word = |c: u8| c.is_ascii_alphanumeric() || b"_-.'".contains(&c);
    let mut i = at;
    while i < text.len() && !word(text[i]) && text[i] != b'"' {
        i += 1;
    }
    if i >= text.len() {
        return None;
    }
    if text[i] == b'"' {
        let end = text[i + 1..]
            .iter()
            .position(|&c| c == b'"' || c == b'\n')?;
        return (text[i + 1 + end] == b'"').then_some((i, i + end + 2));
    }
    let mut j = i;
    while j < text.len() && word(text[j]) {
        j += 1;
    }
    Some((i, j))
}

/// One edit, as drawn: what to do, where (two positions, scaled to the input) and which token.
type Edit = (u8, u32, u32, u8);

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((0u8..10, any::<u32>(), any::<u32>(), any::<u8>()), 1..6)
}

/// Byte edits; `structural` also edits the parsed JSON document when the input parses.
///
/// Nickel mutants whose first edit draws a token below 128 get only whole-token replacements
/// (by [`NICKEL_VALUES`]), and the others get them for ops 7–9: most of those still parse, where
/// byte edits mostly make syntax errors.
fn mutate(input: &[u8], edits: &[Edit], tokens: &[&str], json: bool) -> Vec<u8> {
    let mut out = input.to_vec();
    let tokens_only = !json && edits.first().is_some_and(|e| e.3 < 128);
    for &(op, a, b, t) in edits {
        if json
            && op >= 7
            && let Ok(mut doc) = serde_json::from_slice::<Value>(&out)
        {
            mutate_json(&mut doc, op, a, b);
            out = serde_json::to_vec_pretty(&doc).unwrap_or(out);
            continue;
        }
        if !json && (tokens_only || op >= 7) {
            let at = a as usize % out.len().max(1);
            if let Some((i, j)) = token_at(&out, at) {
                let value = NICKEL_VALUES[(b as usize) % NICKEL_VALUES.len()];
                out.splice(i..j, value.bytes());
            }
            continue;
        }
        let len = out.len();
        let at = |x: u32| if len == 0 { 0 } else { x as usize % (len + 1) };
        let (i, j) = {
            let (i, j) = (at(a), at(b));
            (i.min(j), i.max(j).min(i + 64))
        };
        let token = tokens[t as usize % tokens.len()].as_bytes();
        match op {
            0 => {
                out.drain(i..j);
            }
            1 | 7 => {
                out.splice(i..i, token.iter().copied());
            }
            2 | 8 => {
                out.splice(i..j, token.iter().copied());
            }
            3 => {
                let copy = out[i..j].to_vec();
                out.splice(j..j, copy);
            }
            4 => {
                if let Some(x) = out.get_mut(i) {
                    *x = (b & 0xff) as u8;
                }
            }
            5 => out.truncate(i),
            _ => {
                // Swap two ranges of up to 16 bytes.
                let k = at(b);
                if i + 16 <= len && k + 16 <= len && (i + 16 <= k || k + 16 <= i) {
                    for n in 0..16 {
                        out.swap(i + n, k + n);
                    }
                }
            }
        }
    }
    out
}

/// Replaces, removes or duplicates one node of `doc` (picked by `a`).
fn mutate_json(doc: &mut Value, op: u8, a: u32, b: u32) {
    let count = count_nodes(doc);
    let target = a as usize % count.max(1);
    let replacement = match b % 9 {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(""),
        4 => json!("x".repeat(70_000)),
        5 => json!([[[[[[]]]]]]),
        6 => json!({}),
        7 => json!(1.5),
        _ => json!("network.main"),
    };
    let mut n = 0;
    edit_node(doc, target, &mut n, &mut |v: &mut Value| match op {
        7 => *v = replacement.clone(),
        8 => match v {
            Value::Object(m) => {
                if let Some(k) = m.keys().nth(b as usize % m.len().max(1)).cloned() {
                    m.remove(&k);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                items.remove(b as usize % items.len());
            }
            _ => *v = Value::Null,
        },
        _ => {
            if let Value::Array(items) = v
                && let Some(first) = items.first().cloned()
            {
                items.push(first);
            }
        }
    });
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(m) => m.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn edit_node(v: &mut Value, target: usize, n: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *n == target {
        f(v);
        return true;
    }
    *n += 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|i| edit_node(i, target, n, f)),
        Value::Object(m) => m.values_mut().any(|i| edit_node(i, target, n, f)),
        _ => false,
    }
}

/// What a case found wrong, if anything.
type Verdict = Result<(), String>;

struct Seeds {
    /// Corpus inputs (name, bytes), copied into `dir` so relative imports resolve.
    corpus: Vec<(String, Vec<u8>)>,
    /// State fixtures with the graph they are planned against.
    fixtures: Vec<(Vec<u8>, Arc<Graph>)>,
    /// Plan files, and plans as JSON.
    plan_files: Vec<Vec<u8>>,
    plans: Vec<Vec<u8>>,
    /// The smallest `ok` input: it must still compile after a limit stopped an evaluation.
    probe: PathBuf,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compiler/tests/inputs")
}

/// Settings with a fresh key: plan files are sealed when written and opened when read.
fn keyed() -> chimera_workflow::Settings {
    let text = chimera_seal::Key::generate().expect("a key");
    let key = chimera_seal::Key::from_base64(&text, "fuzz").expect("a key");
    chimera_workflow::Settings {
        keys: chimera_seal::Keys::ring(chimera_seal::Keyring::new(key, None)),
        ..chimera_workflow::Settings::default()
    }
}

fn seeds(dir: &Path, keyed: &chimera_workflow::Settings) -> Seeds {
    let mut corpus = Vec::new();
    let mut graphs = Vec::new();
    let mut probe: Option<(usize, PathBuf)> = None;
    for sub in ["ok", "fail"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join(sub))
            .expect("the corpus")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ncl"))
            .collect();
        entries.sort();
        for p in entries {
            let bytes = std::fs::read(&p).expect("a corpus file");
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::write(dir.join(&name), &bytes).expect("copy the corpus");
            let text = String::from_utf8_lossy(&bytes);
            let limits = text
                .lines()
                .take_while(|l| l.starts_with('#'))
                .any(|l| l.starts_with("# timeout-ms") || l.starts_with("# memory-mib"));
            if sub == "ok" {
                let c = chimera_compiler::compile(&dir.join(&name), &EvalOptions::default());
                if c.graph.is_some() && probe.as_ref().is_none_or(|(n, _)| bytes.len() < *n) {
                    probe = Some((bytes.len(), dir.join(&name)));
                }
                graphs.extend(c.graph.map(Arc::new));
            }
            if !limits {
                corpus.push((name, bytes));
            }
        }
    }
    let mut fixtures = Vec::new();
    let mut plan_files = Vec::new();
    let mut plans = Vec::new();
    let plain = chimera_workflow::Settings::default();
    for (i, g) in graphs.iter().enumerate() {
        let rows = plan::prior_from_graph(g, &[]);
        let doc = json!({ "lineage": format!("lineage-{i}"), "serial": 3, "resources": rows });
        fixtures.push((serde_json::to_vec_pretty(&doc).unwrap(), g.clone()));
        // A plan from nothing, and one against state where the first resource changed.
        let mut changed = rows.clone();
        if let Some(r) = changed.first_mut() {
            r.attrs.insert("name".into(), json!("renamed"));
            r.hash = chimera_model::ContentHash([7; 32]);
        }
        for prior_rows in [Vec::new(), changed] {
            let prior = Prior {
                lineage: Some(format!("lineage-{i}")),
                serial: if prior_rows.is_empty() { 0 } else { 3 },
                resources: &prior_rows,
            };
            let Ok(p) = plan::plan(Some(g), &g.stack, &prior) else {
                continue;
            };
            plans.push(serde_json::to_vec_pretty(&p).unwrap());
            let file = PlanFile {
                plan: p,
                state_url: "sqlite://.chimera/state.db".into(),
                local_cloud: ".chimera/cloud.db".into(),
                policies: String::new(),
            };
            // Sealed, and plain (without a key, a plan holding a sensitive value is not
            // written: E0801).
            for settings in [keyed, &plain] {
                let path = dir.join(format!("seed-{i}-{}.plan", plan_files.len()));
                if chimera_workflow::write_plan_file(&path, &file, settings).is_ok() {
                    plan_files.push(std::fs::read(&path).unwrap());
                }
            }
        }
    }
    Seeds {
        corpus,
        fixtures,
        plan_files,
        plans,
        probe: probe.expect("an ok corpus input that compiles").1,
    }
}

/// Codes about the evaluation as a whole, which have nowhere better to point than the stack file.
const WHOLE_STACK: &[chimera_model::Code] = &[
    codes::EVAL_TIMEOUT,
    codes::EVAL_MEMORY,
    codes::STACK_UNREADABLE,
    codes::EVALUATOR_UNAVAILABLE,
];

/// Whether `d` has no place, or only the one the compiler's fallback gives what it cannot place:
/// the stack file's first character, with no span.
fn unplaced(d: &Diagnostic) -> bool {
    d.location.as_ref().is_none_or(|l| {
        l.span.is_none() && (l.line, l.column, l.end_line, l.end_column) == (1, 1, 1, 1)
    })
}

/// No internal error, every diagnostic placed, and no flood. `any_place`: any location will do
/// (the fixture reader's first line for a file it cannot read); otherwise (the compiler's) the
/// fallback place is accepted only for [`WHOLE_STACK`] codes.
fn located(ds: &[Diagnostic], what: &str, any_place: bool) -> Verdict {
    for d in ds {
        if d.code == codes::INTERNAL {
            return Err(format!(
                "{what}: internal error: {} ({})",
                d.summary, d.detail
            ));
        }
        let placed = if any_place {
            d.location.is_some()
        } else {
            !unplaced(d) || WHOLE_STACK.contains(&d.code)
        };
        if !placed {
            return Err(format!(
                "{what}: diagnostic without a place: {} {} ({})",
                d.code.0, d.summary, d.detail
            ));
        }
    }
    not_flooded(ds, what)
}

/// At most [`FOLD_KEEP`] diagnostics of one kind (the rest folded), and [`MAX_DIAGNOSTICS`] in
/// all.
fn not_flooded(ds: &[Diagnostic], what: &str) -> Verdict {
    if ds.len() > MAX_DIAGNOSTICS {
        return Err(format!("{what}: flood: {} diagnostics", ds.len()));
    }
    let mut kinds = std::collections::HashMap::new();
    for d in ds {
        let n = kinds
            .entry((d.code, d.severity, &d.summary, &d.detail))
            .or_insert(0usize);
        *n += 1;
        if *n > FOLD_KEEP {
            return Err(format!(
                "{what}: flood: more than {FOLD_KEEP} of one kind kept ({} {})",
                d.code.0, d.summary
            ));
        }
    }
    Ok(())
}

/// The rendering of `ds` is bounded.
fn rendered_bounded(sources: &chimera_model::SourceMap, ds: &[Diagnostic], what: &str) -> Verdict {
    let len = sources.render(ds, false).len();
    if len > MAX_RENDERED {
        return Err(format!("{what}: flood: {len} bytes of diagnostics"));
    }
    Ok(())
}

/// Renders a plan every way the CLI does.
fn render_all(p: &Plan) {
    let _ = render::plan_text(p, false);
    let _ = render::plan_text(p, true);
    let _ = render::plan_json(p);
    let _ = render::summary_line(p);
    let _ = plan_markdown(p, &MarkdownOptions::for_plan(p));
    let _ = plan::unrestorable(p);
}

/// How a compile case ended: "compiled", or its first diagnostic's code.
type Outcome = String;

fn compile_case(path: &Path, outcome: &mut Outcome) -> Verdict {
    let opts = EvalOptions::default();
    let started = Instant::now();
    let disk: Arc<dyn Source> = Arc::new(Disk::new());
    let c = chimera_compiler::compile_from(&disk, path, &opts);
    if started.elapsed() > opts.timeout + Duration::from_secs(5) {
        return Err(format!("hang: {:.1} s", started.elapsed().as_secs_f64()));
    }
    *outcome = match c.diagnostics.iter().find(|d| d.is_error()) {
        // `FUZZ_EXPLAIN=E0002`: that code's outcomes are told apart by summary.
        Some(d) if std::env::var("FUZZ_EXPLAIN").is_ok_and(|e| e == d.code.0) => {
            format!("{} ({})", d.code.0, d.summary)
        }
        Some(d) => d.code.0.to_string(),
        None => "compiled".into(),
    };
    located(&c.diagnostics, "compile", false)?;
    if c.has_errors() != c.graph.is_none() {
        return Err("a graph and errors, or neither".into());
    }
    rendered_bounded(&c.sources, &c.diagnostics, "compile")?;
    if let Some(g) = &c.graph {
        let prior = Prior {
            lineage: None,
            serial: 0,
            resources: &[],
        };
        if let Ok(p) = plan::plan(Some(g), &g.stack, &prior) {
            render_all(&p);
        }
    }
    Ok(())
}

fn fixture_case(path: &Path, graph: &Graph) -> Verdict {
    let mut sources = chimera_model::SourceMap::default();
    match chimera_workflow::test::read_fixture(path, "tests/case.state.json", &mut sources) {
        Err(d) => {
            located(std::slice::from_ref(&d), "fixture", true)?;
            rendered_bounded(&sources, &[d], "fixture")?;
        }
        Ok((lineage, serial, rows)) => plan_against(graph, lineage, serial, &rows)?,
    }
    Ok(())
}

fn plan_against(
    graph: &Graph,
    lineage: Option<String>,
    serial: u64,
    rows: &[StateResource],
) -> Verdict {
    let prior = Prior {
        lineage,
        serial,
        resources: rows,
    };
    match plan::plan(Some(graph), &graph.stack, &prior) {
        Ok(p) => render_all(&p),
        Err(ds) => {
            if let Some(d) = ds
                .iter()
                .find(|d| d.location.is_none() && d.address.is_none())
            {
                return Err(format!(
                    "plan: diagnostic without a location or address: {}",
                    d.summary
                ));
            }
            not_flooded(&ds, "plan")?;
        }
    }
    // Rolling back to these rows, and destroying them, plan too.
    if let Ok(p) = plan::plan_targets(
        plan::rollback_targets(rows),
        &graph.stack,
        &prior,
        graph.hash,
        false,
    ) {
        render_all(&p);
    }
    if let Ok(p) = plan::plan(None, &graph.stack, &prior) {
        render_all(&p);
    }
    Ok(())
}

fn plan_file_case(path: &Path, settings: &chimera_workflow::Settings) -> Verdict {
    match chimera_workflow::read_plan_file(path, settings) {
        Ok(f) => render_all(&f.plan),
        Err(e) => {
            not_flooded(&e.diagnostics, "plan file")?;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            for d in &e.diagnostics {
                let named = d.location.is_some()
                    || d.detail.contains(name.as_str())
                    || d.summary.contains(name.as_str());
                if !named {
                    return Err(format!(
                        "plan file: diagnostic names no file: {} ({})",
                        d.summary, d.detail
                    ));
                }
            }
        }
    }
    Ok(())
}

fn plan_json_case(bytes: &[u8]) -> Verdict {
    if let Ok(p) = serde_json::from_slice::<Plan>(bytes) {
        render_all(&p);
        let _ = p.digest();
    }
    Ok(())
}

/// The case running now, for the watchdog: its number ([`IDLE`] between cases), when it
/// started (ms since the run began), and its input.
struct Running {
    case: AtomicU64,
    since_ms: AtomicU64,
    input: Mutex<(Vec<u8>, &'static str)>,
}

const IDLE: u64 = u64::MAX;

/// Ends the run when a case outlives the evaluation timeout by [`HANG_GRACE`]: a hang cannot
/// be caught on the thread that hangs.
fn watchdog(running: Arc<Running>, began: Instant, findings_dir: PathBuf) {
    let limit = EvalOptions::default().timeout + HANG_GRACE;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let case = running.case.load(Ordering::SeqCst);
            if case == IDLE {
                continue;
            }
            let since = Duration::from_millis(running.since_ms.load(Ordering::SeqCst));
            let took = began.elapsed().saturating_sub(since);
            if took > limit {
                let (input, ext) = running.input.lock().map(|g| g.clone()).unwrap_or_default();
                let _ = std::fs::create_dir_all(&findings_dir);
                let file = findings_dir.join(format!("finding-{case}.{ext}"));
                let _ = std::fs::write(&file, &input);
                eprintln!(
                    "finding: hang: case {case} still running after {:.0} s ({})",
                    took.as_secs_f64(),
                    file.display()
                );
                std::process::exit(1);
            }
        }
    });
}

/// Whether a good input still compiles: after a limit stopped an evaluation, a worker still
/// running or memory still held would fail it (retried while the allocator gives memory back).
fn still_compiles(probe: &Path) -> Verdict {
    let mut last = String::new();
    for _ in 0..3 {
        let c = chimera_compiler::compile(probe, &EvalOptions::default());
        if c.graph.is_some() {
            return Ok(());
        }
        last = c
            .diagnostics
            .first()
            .map(|d| format!("{} {}", d.code.0, d.summary))
            .unwrap_or_default();
        std::thread::sleep(Duration::from_secs(5));
    }
    Err(format!(
        "after a limit stopped this case, a good input no longer compiles: {last}"
    ))
}

/// Evaluation threads still alive (a stopped evaluation's worker that never ended).
fn evaluation_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "nickel-eval")
                })
                .count()
        })
        .unwrap_or(0)
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let cases = arg("--cases").unwrap_or(10_000);
    let seed = arg("--seed").unwrap_or(19);
    // A quiet panic hook: panics are findings, reported below with their input.
    std::panic::set_hook(Box::new(|_| {}));

    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path();
    let keyed = keyed();
    let seeds = seeds(dir, &keyed);
    let findings_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-findings");
    let mut findings = Vec::new();
    let mut report = |n: String, ext: &str, input: &[u8], problem: String| {
        let _ = std::fs::create_dir_all(&findings_dir);
        let file = findings_dir.join(format!("finding-{n}.{ext}"));
        let _ = std::fs::write(&file, input);
        eprintln!(
            "finding {}: {problem} ({})",
            findings.len() + 1,
            file.display()
        );
        findings.push(problem);
    };
    // The unmutated corpus passes the same checks, or the harness (or the corpus) is wrong.
    for (name, bytes) in &seeds.corpus {
        let mut outcome = Outcome::new();
        let v = catch_unwind(AssertUnwindSafe(|| {
            compile_case(&dir.join(name), &mut outcome)
        }));
        if let Some(problem) = match v {
            Ok(Ok(())) => None,
            Ok(Err(m)) => Some(m),
            Err(p) => Some(format!("panic: {}", panic_message(p))),
        } {
            report(format!("seed-{name}"), "ncl", bytes, problem);
        }
    }

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = (any::<u32>(), edits());
    let started = Instant::now();
    let running = Arc::new(Running {
        case: AtomicU64::new(IDLE),
        since_ms: AtomicU64::new(0),
        input: Mutex::new((Vec::new(), "")),
    });
    watchdog(running.clone(), started, findings_dir.clone());
    let mut counts = [0u64; 4];
    let mut unchanged = 0u64;
    let mut outcomes: BTreeMap<Outcome, u64> = BTreeMap::new();
    let mut slowest = (Duration::ZERO, String::new());
    for n in 0..cases {
        let (pick, edits) = strategy
            .new_tree(&mut runner)
            .expect("a mutation")
            .current();
        let pick = pick as usize;
        let target = (n % 4) as usize;
        let (seed_input, ext, tokens): (&[u8], &'static str, &[&str]) = match target {
            0 => (
                &seeds.corpus[pick % seeds.corpus.len()].1,
                "ncl",
                NICKEL_TOKENS,
            ),
            1 => (
                &seeds.fixtures[pick % seeds.fixtures.len()].0,
                "state.json",
                JSON_TOKENS,
            ),
            2 => (
                &seeds.plan_files[pick % seeds.plan_files.len()],
                "plan",
                JSON_TOKENS,
            ),
            _ => (
                &seeds.plans[pick % seeds.plans.len()],
                "plan.json",
                JSON_TOKENS,
            ),
        };
        let input = mutate(seed_input, &edits, tokens, target != 0);
        if input == seed_input {
            unchanged += 1;
        }
        let path = match target {
            0 => dir.join(format!(
                "mutant-{}",
                seeds.corpus[pick % seeds.corpus.len()].0
            )),
            1 => dir.join("case.state.json"),
            2 => dir.join("mutant.plan"),
            _ => dir.join("mutant.plan.json"),
        };
        std::fs::write(&path, &input).expect("write a mutant");
        if let Ok(mut g) = running.input.lock() {
            *g = (input.clone(), ext);
        }
        running
            .since_ms
            .store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
        running.case.store(n, Ordering::SeqCst);
        let case_started = Instant::now();
        let mut outcome = Outcome::new();
        let verdict = catch_unwind(AssertUnwindSafe(|| match target {
            0 => compile_case(&path, &mut outcome),
            1 => fixture_case(&path, &seeds.fixtures[pick % seeds.fixtures.len()].1),
            2 => plan_file_case(&path, &keyed),
            _ => plan_json_case(&input),
        }));
        running.case.store(IDLE, Ordering::SeqCst);
        counts[target] += 1;
        let took = case_started.elapsed();
        if took > slowest.0 {
            slowest = (took, ext.to_string());
        }
        let mut problem = match verdict {
            Ok(Ok(())) => None,
            Ok(Err(m)) => Some(m),
            Err(panic) => Some(format!("panic: {}", panic_message(panic))),
        };
        if target == 0 {
            let stopped = outcome == codes::EVAL_TIMEOUT.0 || outcome == codes::EVAL_MEMORY.0;
            *outcomes.entry(outcome).or_default() += 1;
            if stopped && problem.is_none() {
                problem = still_compiles(&seeds.probe).err();
            }
        }
        if let Some(problem) = problem {
            report(n.to_string(), ext, &input, problem);
        }
    }
    // A stopped evaluation's worker frees its heap and ends; one still running is a leak the
    // daemon, which compiles every tick, would pile up.
    let waited = Instant::now();
    while evaluation_threads() > 0 && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = evaluation_threads();
    if left > 0 {
        report(
            "threads".into(),
            "txt",
            b"",
            format!("{left} evaluation thread(s) still running after the run"),
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let outcomes: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "fuzz: {cases} cases (seed {seed}; compile {}, fixtures {}, plan files {}, plans {}; {unchanged} left unchanged) in {secs:.1} s, slowest {:.2} s ({}), {} findings",
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        slowest.0.as_secs_f64(),
        slowest.1,
        findings.len()
    );
    println!("compile outcomes: {}", outcomes.join(", "));
    if !findings.is_empty() {
        std::process::exit(1);
    }
}
