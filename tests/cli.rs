//! The `chimera` binary as users see it, as insta snapshots (`cargo insta review` shows any
//! change in review): exit codes, stdout and stderr of the examples, diagnostics in text and
//! JSON, and a whole lifecycle — apply, drift, plan, heal, history, a failing apply. Paths,
//! times, ids, addresses and hashes are filtered so the snapshots hold on every machine.

use std::path::Path;
use std::process::Command;

/// What a run printed, in one document: the exit code, then stdout and stderr.
fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chimera"));
    cmd.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("USER", "tester")
        .env_remove("CHIMERA_STATE")
        .env_remove("CHIMERA_CACHE_TRACE")
        .env_remove("CHIMERA_LOCAL_CLOUD");
    for k in chimera_workflow::LOCAL_KNOBS {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run chimera");
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs in the repository, without writing its evaluation cache.
fn chimera(args: &[&str]) -> String {
    let mut all = vec!["--no-cache"];
    all.extend_from_slice(args);
    run_in(repo(), &all, &[])
}

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            filters => vec![
                (r"/tmp/\.tmp[A-Za-z0-9]+", "[TMP]"),
                (r"\b(net|subnet|fw|i|vol)-[0-9a-f]{8}\b", "[ID]"),
                (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?", "[TIME]"),
                (r"\b[0-9a-f]{32,64}\b", "[HASH]"),
                // Progress lines come in the order calls finish.
                (r"(?m)^\S+: (create|update|delete) done\n", ""),
            ],
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!($name, $value);
        });
    };
}

#[test]
fn the_examples_check_clean() {
    let mut all = String::new();
    for ex in ["examples/webapp", "examples/fleet", "examples/multicloud"] {
        all.push_str(&format!(
            "$ chimera check {ex}\n{}\n",
            chimera(&["check", ex])
        ));
    }
    snapshot!("check_examples", all);
}

#[test]
fn a_check_failure_is_located_in_text_and_json() {
    let bad = "compiler/tests/inputs/fail/port_70000.ncl";
    snapshot!(
        "check_failure_text",
        chimera(&["check", bad, "--color", "never"])
    );
    snapshot!(
        "check_failure_json",
        chimera(&["check", bad, "--error-format", "json"])
    );
    snapshot!(
        "check_missing_stack",
        chimera(&["check", "no/such/dir", "--color", "never"])
    );
    snapshot!(
        "check_infinite_loop",
        chimera(&[
            "check",
            "compiler/tests/inputs/fail/infinite_loop.ncl",
            "--eval-timeout",
            "1",
        ])
    );
}

#[test]
fn graph_formats_and_eval_redact_secrets() {
    snapshot!(
        "graph_dot",
        chimera(&["graph", "examples/webapp", "--format", "dot"])
    );
    snapshot!(
        "graph_mermaid",
        chimera(&["graph", "examples/webapp", "--format", "mermaid"])
    );
    let eval = chimera(&["eval", "examples/webapp"]);
    assert!(!eval.contains("echo hello"), "user_data must be redacted");
    snapshot!("eval_webapp", eval);
}

#[test]
fn help_is_available_everywhere() {
    snapshot!("help", chimera(&["--help"]));
    for cmd in ["check", "graph", "eval", "plan", "apply"] {
        let out = chimera(&[cmd, "--help"]);
        assert!(out.starts_with("exit: 0") && out.contains("Usage"), "{out}");
    }
    snapshot!("help_plan", chimera(&["plan", "--help"]));
}

const STACK: &str = r#"let c = import "chimera.ncl" in
let net = c.Network & { name = "main", cidr = "10.0.0.0/16", tags = { team = "web" } } in
let sn = c.Subnet & { name = "web", network = net, cidr = "10.0.1.0/24" } in
{ stack = "life", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & { name = "w-%{std.to_string i}", size = 'small, subnet = sn }) 2 }
"#;

#[test]
fn a_lifecycle_as_users_see_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("main.ncl"), STACK).unwrap();
    let mut log = String::new();
    let mut step = |args: &[&str], env: &[(&str, &str)]| {
        log.push_str(&format!(
            "$ chimera {}\n{}\n",
            args.join(" "),
            run_in(d, args, env)
        ));
    };
    step(&["plan"], &[]);
    step(&["apply", "-y"], &[]);
    step(&["plan", "--detailed-exitcode"], &[]);
    step(&["state", "list"], &[]);
    step(
        &["local", "mutate", "subnet.web", "--set", "public=true"],
        &[],
    );
    step(&["local", "mutate", "instance.w-1", "--delete"], &[]);
    step(&["plan", "--detailed-exitcode"], &[]);
    step(&["plan", "--refresh=false", "--detailed-exitcode"], &[]);
    step(&["plan", "--format", "json"], &[]);
    step(&["apply", "-y"], &[]);
    step(&["history"], &[]);
    snapshot!("lifecycle", log);
}

#[test]
fn a_failing_apply_as_users_see_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("main.ncl"), STACK).unwrap();
    let failing = [("CHIMERA_LOCAL_FAILURE_RATE", "1")];
    let mut log = String::new();
    for args in [
        &["apply", "-y"][..],
        &["--error-format", "json", "apply", "-y"][..],
    ] {
        log.push_str(&format!(
            "$ CHIMERA_LOCAL_FAILURE_RATE=1 chimera {}\n{}\n",
            args.join(" "),
            run_in(d, args, &failing)
        ));
    }
    log.push_str(&format!(
        "$ chimera apply\n{}\n",
        run_in(d, &["apply"], &[])
    ));
    snapshot!("apply_failures", log);
}
