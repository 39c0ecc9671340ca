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

/// Adds `count` generations to `stack` through the state API, each re-recording one of the
/// current rows unchanged (so the stack still matches its cloud), with its intent.
fn add_generations(url: &str, stack: &str, count: usize) {
    use chimera_state::{
        GenerationMeta, GenerationStatus, IntentAction, LockRequest, NewIntent, Outcome,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = chimera_state::open(url).await.unwrap();
        let info = store.stack(stack).await.unwrap().expect("the stack exists");
        let rows = store.current(stack).await.unwrap();
        let lock = store
            .lock(
                stack,
                &LockRequest {
                    owner: "test".into(),
                    operation: "fill".into(),
                },
            )
            .await
            .unwrap();
        for i in 0..count {
            let expected = info.serial + i as u64;
            let meta = GenerationMeta {
                actor: format!("user-{}", i % 7),
                message: format!("change {i}"),
                plan_hash: Some(format!("{i:064x}")),
                desired_hash: None,
            };
            let serial = store
                .begin_generation(&lock, expected, &info.lineage, &meta)
                .await
                .unwrap();
            let row = rows[i % rows.len()].clone();
            let ids = store
                .record_intents(
                    &lock,
                    serial,
                    &[NewIntent {
                        address: row.address.clone(),
                        action: IntentAction::Update,
                        client_token: format!("tok-{serial}"),
                        payload: Some(row.clone()),
                    }],
                )
                .await
                .unwrap();
            let outcome = if i % 100 == 99 {
                Outcome::Failed(format!("simulated failure in {serial}"))
            } else {
                Outcome::Put(Box::new(row))
            };
            store
                .record_results(&lock, serial, &[(ids[0], outcome)])
                .await
                .unwrap();
            let status = if i % 100 == 99 {
                GenerationStatus::Partial
            } else {
                GenerationStatus::Complete
            };
            store
                .finish_generation(&lock, serial, status)
                .await
                .unwrap();
        }
        store.unlock(&lock).await.unwrap();
    });
}

fn dump(url: &str, stack: &str) -> chimera_state::StackDump {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = chimera_state::open(url).await.unwrap();
        store
            .dump(stack)
            .await
            .unwrap()
            .expect("the stack is there")
    })
}

#[test]
fn a_stack_with_1000_generations_migrates_to_postgres_and_back_identically() {
    let pg = Postgres::start(false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet(4)).unwrap();
    let sqlite = format!("sqlite://{}", d.join("a.db").display());
    let o = chimera(d, &sqlite, &["apply", "-y"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    add_generations(&sqlite, "team", 999);
    let original = dump(&sqlite, "team");
    assert_eq!(original.generations.len(), 1000);

    // SQLite → PostgreSQL.
    let migrate = |from: &str, to: &str| {
        chimera(d, "", &["state", "migrate", "--from", from, "--to", to])
            .env_remove("CHIMERA_STATE")
            .output()
            .unwrap()
    };
    let o = migrate(&sqlite, &pg.url);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1000 generations"), "{}", text(&o));
    let on_pg = dump(&pg.url, "team");
    // The same stack, usable where it landed: its history, and a plan with nothing to do.
    let o = chimera(d, &pg.url, &["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = chimera(d, &pg.url, &["history", "--stack", "team"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1001);

    // Again: already there, nothing written.
    let o = migrate(&sqlite, &pg.url);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already in the destination"),
        "{}",
        text(&o)
    );

    // PostgreSQL → a new SQLite file.
    let back = format!("sqlite://{}", d.join("b.db").display());
    let o = migrate(&pg.url, &back);
    assert!(o.status.success(), "{}", text(&o));
    let round_trip = dump(&back, "team");
    for copy in [&on_pg, &round_trip] {
        assert_eq!(copy.lineage, original.lineage);
        assert_eq!(copy.created_at, original.created_at);
        assert_eq!(copy.generations, original.generations);
        assert_eq!(copy.resources, original.resources);
        assert_eq!(copy.intents, original.intents);
        // The original audit trail, then the migrations themselves.
        assert_eq!(copy.audit[..original.audit.len()], original.audit[..]);
    }

    // A different stack of the same name in the destination is never overwritten.
    std::fs::write(d.join("main.ncl"), fleet(1)).unwrap();
    let other = format!("sqlite://{}", d.join("c.db").display());
    let o = chimera(d, &other, &["apply", "-y"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let before = dump(&other, "team");
    let o = migrate(&pg.url, &other);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("already exists in the destination"),
        "{}",
        text(&o)
    );
    assert_eq!(dump(&other, "team"), before);
}

/// What the state holds, to compare before and after: every table's rows for the stack.
fn snapshot(pg: &Postgres) -> String {
    pg.sql(
        "postgres",
        "SELECT (SELECT string_agg(serial || status, ',' ORDER BY serial) FROM generations), \
         (SELECT string_agg(id || status, ',' ORDER BY id) FROM intents), \
         (SELECT count(*) FROM resources), (SELECT count(*) FROM resources WHERE valid_to IS NULL)",
    )
}

#[test]
fn terminating_the_lock_holder_mid_apply_stops_every_commit_and_the_next_run_converges() {
    let pg = Postgres::start(false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet(24)).unwrap();
    let child = chimera(d, &pg.url, &["apply", "-y"])
        .env("CHIMERA_LOCAL_LATENCY_MS", "400")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the apply is under way: instances' intents are recorded (their calls run).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: u32 = pg
            .sql(
                "postgres",
                "SELECT count(*) FROM intents WHERE address LIKE 'instance.%'",
            )
            .parse()
            .unwrap_or(0);
        if n > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the apply never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // End the lock holder's session and wait until it is gone (and its lock with it).
    let killed = pg.sql(
        "postgres",
        "SELECT pg_terminate_backend(backend_pid, 5000) FROM locks WHERE stack = 'team'",
    );
    assert_eq!(killed, "t");
    let at_kill = snapshot(&pg);
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("lock") && t.contains("lost"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    assert_eq!(
        snapshot(&pg),
        at_kill,
        "nothing was committed after the lock was gone"
    );
    assert_ne!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM intents WHERE status = 'pending'"
        ),
        "0",
        "the calls in flight left pending intents"
    );

    // The next run resolves the interrupted apply and converges: every instance exactly once.
    let o = chimera(d, &pg.url, &["apply", "-y"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = chimera(d, &pg.url, &["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM intents WHERE status = 'pending'"
        ),
        "0"
    );
    let o = chimera(d, &pg.url, &["local", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.contains("\tinstance\t"))
            .count(),
        24,
        "{listing}"
    );
}
