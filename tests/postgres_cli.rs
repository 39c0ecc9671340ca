//! State on PostgreSQL through the `chimera` binary: a server started for each test on
//! 127.0.0.1 (initdb + pg_ctl, as the `postgres` user when run as root), stopped at the end.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use chimera_testkit::Postgres;

fn chimera(dir: &Path, state: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("CHIMERA_STATE", state);
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fleet(count: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & {{ name = "workers", network = net, cidr = "10.0.1.0/24" }} in
{{ stack = "team", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & {{ name = "w-%{{std.to_string i}}", size = 'small, subnet = sn }}) {count} }}
"#
    )
}

#[test]
fn apply_plan_and_history_on_postgres() {
    let pg = Postgres::start(false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet(4)).unwrap();
    let o = chimera(d, &pg.url, &["apply", "-y"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = chimera(d, &pg.url, &["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !d.join(".chimera/state.db").exists(),
        "state went to PostgreSQL, not SQLite"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM resources WHERE valid_to IS NULL"
        ),
        "6"
    );
    let o = chimera(d, &pg.url, &["history", "--stack", "team"])
        .output()
        .unwrap();
    assert!(text(&o).contains("complete"), "{}", text(&o));
}

#[test]
fn two_writers_on_postgres_exactly_one_proceeds() {
    let pg = Postgres::start(false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet(8)).unwrap();
    let spawn = || {
        chimera(d, &pg.url, &["apply", "-y"])
            .env("CHIMERA_LOCAL_LATENCY_MS", "150")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let oks = [&a, &b].iter().filter(|o| o.status.success()).count();
    match [&a, &b].into_iter().find(|o| !o.status.success()) {
        Some(loser) => {
            assert_eq!(oks, 1);
            let t = text(loser);
            assert!(t.contains("is locked by") && t.contains("pid"), "{t}");
        }
        None => assert_eq!(oks, 2, "the second found nothing to do"),
    }
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM generations WHERE stack = 'team'"
        ),
        "1",
        "exactly one generation"
    );
}

#[test]
fn a_bad_postgres_url_is_a_diagnostic() {
    let pg = Postgres::start(false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet(1)).unwrap();
    let url = pg.url.replace("/postgres", "/missing");
    let o = chimera(d, &url, &["plan"]).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("does not exist") && t.contains("createdb"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}
