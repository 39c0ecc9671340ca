//! The fuzzer (issue #19): mutates the compiler's corpus (`compiler/tests/inputs`), state
//! fixtures (`tests/NAME.state.json`, as `chimera test` reads them) and plan files (as `apply
//! FILE` reads them), and runs each mutant through what Chimera does with it: compile (under the
//! CLI's default evaluation limits), read the fixture and plan against it, read the plan file,
//! and render every plan as text, JSON and Markdown.
//!
//! A finding is a panic, a case that outlives the evaluation limits (a hang), an internal error
//! (E0010), or a diagnostic without a location (the compiler's and the fixture reader's; a plan
//! file's diagnostic must name the file). Each finding's input is written to
//! `target/fuzz-findings/` to become a corpus case once fixed.
//!
//! Mutations are drawn by proptest (deterministic for a seed): byte edits (delete, insert,
//! duplicate, overwrite, splice in a token of Nickel or JSON) and, for JSON, edits of the parsed
//! document (replace, remove or duplicate a node), so mutants get past the parser as well as
//! into it. Inputs whose corpus header sets their own limits (`# timeout-ms`, `# memory-mib`:
//! loops on purpose) are not mutated.
//!
//! Run: `cargo bench -p chimera-workflow --bench fuzz -- [--cases N] [--seed S]`
//! (release; 10,000 cases by default). Exit status 1 when anything was found.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chimera_compiler::{Disk, EvalOptions, Graph, Source};
use chimera_model::StateResource;
use chimera_plans::markdown::{MarkdownOptions, plan_markdown};
use chimera_plans::plan::{self, Plan, Prior};
use chimera_plans::{PlanFile, render};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// One edit, as drawn: what to do, where (two positions, scaled to the input) and which token.
type Edit = (u8, u32, u32, u8);

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((0u8..10, any::<u32>(), any::<u32>(), any::<u8>()), 1..6)
}

/// Byte edits; `structural` also edits the parsed JSON document when the input parses.
fn mutate(input: &[u8], edits: &[Edit], tokens: &[&str], json: bool) -> Vec<u8> {
    let mut out = input.to_vec();
    for &(op, a, b, t) in edits {
        if json
            && op >= 7
            && let Ok(mut doc) = serde_json::from_slice::<Value>(&out)
        {
            mutate_json(&mut doc, op, a, b);
            out = serde_json::to_vec_pretty(&doc).unwrap_or(out);
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
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compiler/tests/inputs")
}

fn seeds(dir: &Path) -> Seeds {
    let mut corpus = Vec::new();
    let mut graphs = Vec::new();
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
    let settings = chimera_workflow::Settings::default();
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
            let path = dir.join(format!("seed-{i}-{}.plan", plan_files.len()));
            // Without a key, a plan holding a sensitive value is not written (E0801).
            if chimera_workflow::write_plan_file(&path, &file, &settings).is_err() {
                continue;
            }
            plan_files.push(std::fs::read(&path).unwrap());
        }
    }
    Seeds {
        corpus,
        fixtures,
        plan_files,
        plans,
    }
}

fn located(ds: &[chimera_model::Diagnostic], what: &str) -> Verdict {
    for d in ds {
        if d.code == chimera_model::codes::INTERNAL {
            return Err(format!(
                "{what}: internal error: {} ({})",
                d.summary, d.detail
            ));
        }
        if d.location.is_none() {
            return Err(format!(
                "{what}: diagnostic without a location: {} {} ({})",
                d.code.0, d.summary, d.detail
            ));
        }
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

fn compile_case(path: &Path) -> Verdict {
    let opts = EvalOptions::default();
    let started = Instant::now();
    let disk: Arc<dyn Source> = Arc::new(Disk::new());
    let c = chimera_compiler::compile_from(&disk, path, &opts);
    if started.elapsed() > opts.timeout + Duration::from_secs(5) {
        return Err(format!("hang: {:.1} s", started.elapsed().as_secs_f64()));
    }
    located(&c.diagnostics, "compile")?;
    if c.has_errors() != c.graph.is_none() {
        return Err("a graph and errors, or neither".into());
    }
    let _ = c.sources.render(&c.diagnostics, false);
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
            located(std::slice::from_ref(&d), "fixture")?;
            let _ = sources.render(&[d], false);
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

fn plan_file_case(path: &Path) -> Verdict {
    match chimera_workflow::read_plan_file(path, &chimera_workflow::Settings::default()) {
        Ok(f) => render_all(&f.plan),
        Err(e) => {
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
    let seeds = seeds(dir);
    let findings_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-findings");
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
    let mut counts = [0u64; 4];
    let mut findings = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for n in 0..cases {
        let (pick, edits) = strategy
            .new_tree(&mut runner)
            .expect("a mutation")
            .current();
        let target = (n % 4) as usize;
        let case_started = Instant::now();
        let (input, ext, verdict) = match target {
            0 => {
                let (name, bytes) = &seeds.corpus[pick as usize % seeds.corpus.len()];
                let input = mutate(bytes, &edits, NICKEL_TOKENS, false);
                let path = dir.join(format!("mutant-{name}"));
                std::fs::write(&path, &input).expect("write a mutant");
                let v = catch_unwind(AssertUnwindSafe(|| compile_case(&path)));
                (input, "ncl", v)
            }
            1 => {
                let (bytes, graph) = &seeds.fixtures[pick as usize % seeds.fixtures.len()];
                let input = mutate(bytes, &edits, JSON_TOKENS, true);
                let path = dir.join("case.state.json");
                std::fs::write(&path, &input).expect("write a mutant");
                let v = catch_unwind(AssertUnwindSafe(|| fixture_case(&path, graph)));
                (input, "state.json", v)
            }
            2 => {
                let bytes = &seeds.plan_files[pick as usize % seeds.plan_files.len()];
                let input = mutate(bytes, &edits, JSON_TOKENS, true);
                let path = dir.join("mutant.plan");
                std::fs::write(&path, &input).expect("write a mutant");
                let v = catch_unwind(AssertUnwindSafe(|| plan_file_case(&path)));
                (input, "plan", v)
            }
            _ => {
                let bytes = &seeds.plans[pick as usize % seeds.plans.len()];
                let input = mutate(bytes, &edits, JSON_TOKENS, true);
                let v = catch_unwind(AssertUnwindSafe(|| plan_json_case(&input)));
                (input, "plan.json", v)
            }
        };
        counts[target] += 1;
        let took = case_started.elapsed();
        if took > slowest.0 {
            slowest = (took, ext.to_string());
        }
        let problem = match verdict {
            Ok(Ok(())) => None,
            Ok(Err(m)) => Some(m),
            Err(panic) => Some(format!(
                "panic: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        if let Some(problem) = problem {
            let _ = std::fs::create_dir_all(&findings_dir);
            let file = findings_dir.join(format!("finding-{n}.{ext}"));
            let _ = std::fs::write(&file, &input);
            eprintln!(
                "finding {}: {problem} ({})",
                findings.len() + 1,
                file.display()
            );
            findings.push(problem);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {cases} cases (seed {seed}; compile {}, fixtures {}, plan files {}, plans {}) in {secs:.1} s, slowest {:.2} s ({}), {} findings",
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        slowest.0.as_secs_f64(),
        slowest.1,
        findings.len()
    );
    if !findings.is_empty() {
        std::process::exit(1);
    }
}
