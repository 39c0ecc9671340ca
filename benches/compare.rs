//! `cargo bench --bench compare [-- CASE ...]`: the `chimera` binary side by side with
//! Terraform, and the evaluation cache.
//!
//! Cases (default: all of them):
//! - `terraform N`: the same graph — N resources in chains of 10 — for Chimera's `local`
//!   provider and Terraform's built-in `terraform_data`; `apply` from empty and a no-op `plan`,
//!   each a fresh process, medians of 3 runs, and the ratio. Terraform is skipped (and said so)
//!   when it is not on PATH. N = 1000 and 5000 by default.
//! - `cache N`: a no-op `chimera plan` of an applied N-resource stack (default 10,000): cold
//!   (`--no-cache`), from the cached graph (state read and planned), and from the plan memo.
//!
//! Every run starts in a fresh temporary directory; nothing reaches the network (Terraform's
//! `terraform_data` is built in: `terraform init` downloads nothing).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs per measurement (`CHIMERA_BENCH_RUNS`, default 3).
fn runs() -> usize {
    std::env::var("CHIMERA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs a command to completion; its wall time in seconds.
fn timed(cmd: &mut Command, ok_codes: &[i32]) -> f64 {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let secs = t.elapsed().as_secs_f64();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        ok_codes.contains(&code),
        "{cmd:?} exited {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn chimera(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE")
        .env_remove("CHIMERA_CACHE_TRACE");
    c
}

fn terraform(dir: &Path) -> Command {
    let mut c = Command::new("terraform");
    c.current_dir(dir)
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1");
    c
}

fn terraform_available() -> bool {
    Command::new("terraform")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// N networks in chains of 10: each refers to the previous one through a tag.
fn chimera_chains(n: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let mk = fun i => c.Network & {{
  name = "n%{{std.to_string i}}",
  cidr = "10.0.0.0/16",
  tags = if i % 10 == 0 then {{}} else {{ after = c.ref "network" "n%{{std.to_string (i - 1)}}" "id" }},
}} in
{{ stack = "compare", resources = std.array.generate mk {n} }}
"#
    )
}

/// The same shape in Terraform: `terraform_data` whose input is the previous one's output.
fn terraform_chains(n: usize) -> String {
    let mut out = String::new();
    for k in 0..n / 10 {
        for i in 0..10 {
            let input = if i == 0 {
                "\"root\"".to_string()
            } else {
                format!("terraform_data.c{k}_{}.output", i - 1)
            };
            out.push_str(&format!(
                "resource \"terraform_data\" \"c{k}_{i}\" {{\n  input = {input}\n}}\n"
            ));
        }
    }
    out
}

fn fleet(n: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/8" }} in
let sn = c.Subnet & {{ name = "workers", network = net, cidr = "10.0.0.0/9" }} in
{{ stack = "cache", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & {{ name = "w-%{{std.to_string i}}", size = 'micro, subnet = sn.outputs.id }}) {} }}
"#,
        n - 2
    )
}

struct Pair {
    apply: Vec<f64>,
    /// The default no-op plan: for both tools it reads every resource from its cloud first.
    plan: Vec<f64>,
    /// Chimera only: the no-op plan with `--no-cache` (evaluation included, refreshing).
    cold_plan: Vec<f64>,
    /// Chimera only: `--refresh=false`, state as recorded (the cached graph, rows read).
    norefresh: Vec<f64>,
    /// Chimera only: `--refresh=false` again, nothing changed (the plan memo).
    replan: Vec<f64>,
}

fn chimera_case(n: usize) -> Pair {
    let (mut apply, mut plan, mut cold_plan, mut norefresh, mut replan) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.ncl"), chimera_chains(n)).unwrap();
        apply.push(timed(chimera(dir.path()).args(["apply", "-y"]), &[0]));
        // A no-op plan as a user runs it after an apply: the cache is warm from the apply's
        // compile; every resource is read from the cloud (as `terraform plan` refreshes), and
        // state is read and diffed.
        plan.push(timed(
            chimera(dir.path()).args(["plan", "--detailed-exitcode"]),
            &[0],
        ));
        // Without refresh: state as recorded (this first one writes the memo) ...
        norefresh.push(timed(
            chimera(dir.path()).args(["plan", "--refresh=false", "--detailed-exitcode"]),
            &[0],
        ));
        // ... and again, from the memo.
        replan.push(timed(
            chimera(dir.path()).args(["plan", "--refresh=false", "--detailed-exitcode"]),
            &[0],
        ));
        cold_plan.push(timed(
            chimera(dir.path()).args(["plan", "--no-cache", "--detailed-exitcode"]),
            &[0],
        ));
    }
    Pair {
        apply,
        plan,
        cold_plan,
        norefresh,
        replan,
    }
}

fn terraform_case(n: usize) -> Pair {
    let (mut apply, mut plan) = (vec![], vec![]);
    for _ in 0..runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.tf"), terraform_chains(n)).unwrap();
        timed(terraform(dir.path()).args(["init", "-input=false"]), &[0]);
        apply.push(timed(
            terraform(dir.path()).args(["apply", "-auto-approve", "-input=false"]),
            &[0],
        ));
        plan.push(timed(
            terraform(dir.path()).args(["plan", "-input=false", "-detailed-exitcode"]),
            &[0],
        ));
    }
    Pair {
        apply,
        plan,
        cold_plan: vec![f64::NAN],
        norefresh: vec![f64::NAN],
        replan: vec![f64::NAN],
    }
}

fn cache_case(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet(n)).unwrap();
    timed(chimera(d).args(["apply", "-y", "--no-cache"]), &[0]);
    let (mut cold, mut graph, mut memo) = (vec![], vec![], vec![]);
    for _ in 0..runs() {
        cold.push(timed(
            chimera(d).args(["plan", "--no-cache", "--detailed-exitcode"]),
            &[0],
        ));
        // Forget the memo (not the graph): the cached graph is planned against state.
        let _ = std::fs::remove_dir_all(d.join(".chimera/cache"));
        timed(chimera(d).args(["check"]), &[0]);
        graph.push(timed(
            chimera(d).args(["plan", "--refresh=false", "--detailed-exitcode"]),
            &[0],
        ));
        memo.push(timed(
            chimera(d).args(["plan", "--refresh=false", "--detailed-exitcode"]),
            &[0],
        ));
    }
    let (c, g, m) = (median(cold), median(graph), median(memo));
    println!(
        "\n### Evaluation cache: no-op `chimera plan` of {n} applied resources (medians of {})\n",
        runs()
    );
    println!("| plan | seconds | × cold |");
    println!("|---|---:|---:|");
    println!("| cold (`--no-cache`: evaluate, read state, plan) | {c:.3} | 1.00 |");
    println!(
        "| cached graph (read state, plan) | {g:.3} | {:.3} |",
        g / c
    );
    println!(
        "| unchanged repo and state (plan memo) | {m:.3} | {:.3} |",
        m / c
    );
}

/// The local cloud beside a `sqlite://…/.chimera/state.db` state: both forms of a stack plan
/// against the one cloud the split form applied to (a refreshing plan reads it).
fn cloud_of(state: &str) -> String {
    state
        .trim_start_matches("sqlite://")
        .replace("state.db", "local-cloud.db")
}

/// `chimera` under `/usr/bin/time` when it exists: wall seconds and peak RSS (MiB, NaN without).
fn timed_rss(dir: &Path, state: &str, args: &[&str]) -> (f64, f64) {
    if !Path::new("/usr/bin/time").exists() {
        return (
            timed(
                chimera(dir)
                    .env("CHIMERA_STATE", state)
                    .env("CHIMERA_LOCAL_CLOUD", cloud_of(state))
                    .args(args),
                &[0],
            ),
            f64::NAN,
        );
    }
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%M")
        .arg(env!("CARGO_BIN_EXE_chimera"))
        .args(args);
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("CHIMERA_STATE", state)
        .env("CHIMERA_LOCAL_CLOUD", cloud_of(state));
    let t = Instant::now();
    let out = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .expect("run");
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    let kb: f64 = err
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (secs, kb / 1024.0)
}

/// The same N instances as one stack file and split into `k` modules (plus one for the
/// network): `check` (evaluate + lower) and a no-op `plan`, both `--no-cache`.
fn modules_case(n: usize, k: usize) {
    let one = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    let head = r#"let c = import "chimera.ncl" in"#;
    let net = r#"[c.Network & { name = "main", cidr = "10.0.0.0/8" }, c.Subnet & { name = "workers", network = c.ref "network" "main" "id", cidr = "10.0.0.0/9" }]"#;
    let workers = |from: usize, count: usize| {
        format!(
            "std.array.generate (fun i => c.Instance & {{ name = \"w-%{{std.to_string (i + {from})}}\", size = 'micro, subnet = c.ref \"subnet\" \"workers\" \"id\" }}) {count}"
        )
    };
    let per = (n - 2) / k;
    std::fs::write(
        one.path().join("main.ncl"),
        format!(
            "{head}\n{{ stack = \"modules\", resources = {net} @ {} }}\n",
            workers(0, per * k)
        ),
    )
    .unwrap();
    let mut names = vec!["\"network.ncl\"".to_string()];
    std::fs::write(
        split.path().join("network.ncl"),
        format!("{head}\n{{ resources = {net} }}\n"),
    )
    .unwrap();
    for m in 0..k {
        std::fs::write(
            split.path().join(format!("workers-{m}.ncl")),
            format!("{head}\n{{ resources = {} }}\n", workers(m * per, per)),
        )
        .unwrap();
        names.push(format!("\"workers-{m}.ncl\""));
    }
    std::fs::write(
        split.path().join("main.ncl"),
        format!(
            "{{ stack = \"modules\", resources = [], modules = [{}] }}\n",
            names.join(", ")
        ),
    )
    .unwrap();
    // One apply (split form); the one-file stack plans against the same state.
    let state = format!(
        "sqlite://{}",
        split.path().join(".chimera/state.db").display()
    );
    timed(
        chimera(split.path())
            .env("CHIMERA_STATE", &state)
            .env("CHIMERA_LOCAL_CLOUD", cloud_of(&state))
            .args(["apply", "-y", "--no-cache"]),
        &[0],
    );
    println!(
        "\n### {n} instances: one stack file vs {k} modules + a network module (`--no-cache`, medians of {}, {} cores)\n",
        runs(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "| form | check (s) | check peak RSS (MiB) | no-op plan `--refresh=false` (s) | its peak RSS (MiB) | refreshing no-op plan (s) | its peak RSS (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut checks = vec![];
    for (form, dir) in [("one file", one.path()), ("modules", split.path())] {
        let (mut ct, mut cm, mut pt, mut pm, mut rt, mut rm) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..runs() {
            let (t, m) = timed_rss(dir, &state, &["check", "--no-cache"]);
            ct.push(t);
            cm.push(m);
            let (t, m) = timed_rss(
                dir,
                &state,
                &[
                    "plan",
                    "--no-cache",
                    "--refresh=false",
                    "--detailed-exitcode",
                ],
            );
            pt.push(t);
            pm.push(m);
            let (t, m) = timed_rss(dir, &state, &["plan", "--no-cache", "--detailed-exitcode"]);
            rt.push(t);
            rm.push(m);
        }
        let c = median(ct);
        checks.push(c);
        println!(
            "| {form} | {c:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} |",
            median(cm),
            median(pt),
            median(pm),
            median(rt),
            median(rm)
        );
    }
    println!(
        "\nSpeed-up of evaluation with modules: {:.2}×",
        checks[0] / checks[1]
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut cases: Vec<(String, usize)> = args
        .chunks(2)
        .map(|c| {
            (
                c[0].clone(),
                c.get(1).and_then(|n| n.parse().ok()).unwrap_or(0),
            )
        })
        .collect();
    if cases.is_empty() {
        cases = vec![
            ("terraform".into(), 1000),
            ("terraform".into(), 5000),
            ("cache".into(), 10000),
            ("modules".into(), 100000),
        ];
    }
    let tf = terraform_available();
    let mut header = false;
    for (case, n) in cases {
        match case.as_str() {
            "terraform" => {
                if !header {
                    println!(
                        "### Chimera vs Terraform: N resources in chains of 10 (medians of {}, seconds, each a fresh process)\n",
                        runs()
                    );
                    println!(
                        "| N | chimera apply | terraform apply | ratio | terraform no-op plan (refreshes) | chimera plan (refreshes) | ratio | chimera plan `--refresh=false` | ratio | chimera re-plan (memo) | ratio | chimera plan `--no-cache` | ratio |"
                    );
                    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
                    header = true;
                }
                let c = chimera_case(n);
                let (ca, cp, cc, cn, cr) = (
                    median(c.apply),
                    median(c.plan),
                    median(c.cold_plan),
                    median(c.norefresh),
                    median(c.replan),
                );
                let (ta, tp) = if tf {
                    let t = terraform_case(n);
                    (median(t.apply), median(t.plan))
                } else {
                    (f64::NAN, f64::NAN)
                };
                let show = |x: f64| {
                    if x.is_nan() {
                        "skipped".to_string()
                    } else {
                        format!("{x:.3}")
                    }
                };
                let ratio = |t: f64, c: f64| {
                    if t.is_nan() {
                        "-".to_string()
                    } else {
                        format!("{:.1}×", t / c)
                    }
                };
                println!(
                    "| {n} | {ca:.3} | {} | {} | {} | {cp:.3} | {} | {cn:.3} | {} | {cr:.3} | {} | {cc:.3} | {} |",
                    show(ta),
                    ratio(ta, ca),
                    show(tp),
                    ratio(tp, cp),
                    ratio(tp, cn),
                    ratio(tp, cr),
                    ratio(tp, cc)
                );
            }
            "modules" => modules_case(if n == 0 { 100_000 } else { n }, 4),
            "cache" => cache_case(if n == 0 { 10_000 } else { n }),
            other => panic!("unknown case `{other}` (terraform N | cache N | modules N)"),
        }
    }
    if !tf {
        println!("\nterraform is not on PATH: its columns were skipped.");
    }
}
