//! `cargo bench -p chimera-compiler --bench compile [-- SIZES...]`
//!
//! Compiles generated fleets of N instances (the shape of examples/fleet) and, for the same
//! file, raw Nickel evaluation (what `nickel export` does). Each measurement runs in a fresh
//! child process so peak RSS (VmHWM) is per measurement. Prints a Markdown table of medians.
//!
//! `-- limits` instead measures the default evaluation limits (issue #19), as the CLI applies
//! them: the 100k fleet must compile under them, and unbounded recursion must be diagnosed
//! (median of 3 child processes each).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

// The same allocator as the `chimera` binary, for both measurements.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// examples/fleet resized through its `count` field, as a user would.
fn fleet(n: usize) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet/main.ncl");
    let example = std::fs::canonicalize(example).expect("examples/fleet");
    format!(
        "(import {:?}) & {{ count = {n} }}\n",
        example.display().to_string()
    )
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn child(mode: &str, file: &Path) {
    let t = Instant::now();
    match mode {
        "raw" => chimera_compiler::eval::evaluate_raw(file).expect("raw eval"),
        "defaults" => {
            let c = chimera_compiler::compile(file, &chimera_compiler::EvalOptions::default());
            let outcome = match c.diagnostics.first() {
                None => "compiled".to_string(),
                Some(d) => d.code.0.to_string(),
            };
            println!("{} {} {outcome}", t.elapsed().as_secs_f64(), peak_rss_mib());
            // A stopped evaluation may leave work behind: report, then leave at once.
            std::process::exit(0);
        }
        _ => {
            let c = chimera_compiler::compile(
                file,
                &chimera_compiler::EvalOptions {
                    timeout: std::time::Duration::from_secs(600),
                    memory_limit: None,
                },
            );
            assert!(
                c.graph.is_some(),
                "{}",
                c.sources.render(&c.diagnostics, false)
            );
        }
    }
    println!("{} {}", t.elapsed().as_secs_f64(), peak_rss_mib());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1], Path::new(&args[2]));
        return;
    }
    if args.first().map(String::as_str) == Some("limits") {
        limits();
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("exe");
    println!(
        "| instances | raw Nickel eval (s) | compile (s) | time ratio | raw peak RSS (MiB) | compile peak RSS (MiB) | memory ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let file = dir.path().join(format!("fleet{n}.ncl"));
        std::fs::write(&file, fleet(n)).expect("write");
        let runs = if n >= 100_000 { 3 } else { 5 };
        let mut res = std::collections::BTreeMap::new();
        for mode in ["raw", "compile"] {
            let (mut ts, mut ms) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let out = Command::new(&exe)
                    .args(["--child", mode])
                    .arg(&file)
                    .output()
                    .expect("child");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let line = String::from_utf8_lossy(&out.stdout);
                let mut it = line
                    .split_whitespace()
                    .map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
                ts.push(it.next().unwrap_or(f64::NAN));
                ms.push(it.next().unwrap_or(f64::NAN));
            }
            res.insert(mode, (median(ts), median(ms)));
        }
        let (rt, rm) = res["raw"];
        let (ct, cm) = res["compile"];
        println!(
            "| {n} | {rt:.3} | {ct:.3} | {:.2} | {rm:.0} | {cm:.0} | {:.2} |",
            ct / rt,
            cm / rm
        );
    }
}

/// The default limits against the 100k fleet and unbounded recursion.
fn limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("exe");
    let recursion = "let c = import \"chimera.ncl\" in\nlet rec f = fun x => f x in\n{ stack = \"x\", resources = [ c.Network & { name = \"main\", cidr = f 1 } ] }\n";
    let defaults = chimera_compiler::EvalOptions::default();
    println!(
        "default limits: {:.0} s, {} MiB",
        defaults.timeout.as_secs_f64(),
        defaults.memory_limit.unwrap_or(0) >> 20
    );
    println!("| input | outcome | wall (s), median of 3 | peak RSS (MiB), median of 3 |");
    println!("|---|---|---:|---:|");
    for (name, text) in [
        ("100k-instance fleet", fleet(100_000)),
        ("`let rec f = fun x => f x in f 1`", recursion.to_string()),
    ] {
        let file = dir.path().join("main.ncl");
        std::fs::write(&file, text).expect("write");
        let (mut ts, mut ms, mut outcome) = (Vec::new(), Vec::new(), String::new());
        // A child that dies before reporting (a crash) is counted and named, not averaged in.
        let mut crashed = Vec::new();
        for _ in 0..3 {
            let out = Command::new(&exe)
                .args(["--child", "defaults"])
                .arg(&file)
                .output()
                .expect("child");
            let line = String::from_utf8_lossy(&out.stdout);
            let mut it = line.split_whitespace();
            match (
                it.next().and_then(|x| x.parse::<f64>().ok()),
                it.next().and_then(|x| x.parse::<f64>().ok()),
                it.next(),
            ) {
                (Some(t), Some(m), Some(o)) => {
                    ts.push(t);
                    ms.push(m);
                    outcome = o.to_string();
                }
                _ => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let why = stderr.lines().last().unwrap_or("").trim().to_string();
                    crashed.push(format!("{} ({why})", out.status));
                }
            }
        }
        if !crashed.is_empty() {
            outcome = format!(
                "{outcome}; {} of 3 crashed: {}",
                crashed.len(),
                crashed.join(", ")
            );
        }
        let med = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { median(v) };
        println!("| {name} | {outcome} | {:.2} | {:.0} |", med(ts), med(ms));
    }
}
