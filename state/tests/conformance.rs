use chimera_state::SqliteStore;

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    chimera_state::conformance::run(&store, "sqlite")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"not a database\n".repeat(64)).unwrap();
    let err = SqliteStore::open(&path).await.err().expect("refused");
    assert!(
        err.to_string().contains("not a Chimera state database")
            || err.to_string().contains("cannot open"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"not a database\n".repeat(64)
    );
}

#[tokio::test]
async fn a_state_path_under_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&file.join("state.db"))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("cannot create the state directory"),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_passes_the_conformance_suite() {
    // A real server, started for this test on 127.0.0.1 and stopped at the end.
    let pg = chimera_testkit::Postgres::start(false);
    let store = chimera_state::open(&pg.url).await.unwrap();
    chimera_state::conformance::run(store.as_ref(), "postgres")
        .await
        .unwrap();
    // Opening again (migrations already applied) is fine, and sees the same data.
    let again = chimera_state::open(&pg.url).await.unwrap();
    assert!(again.stack("postgres-conformance").await.unwrap().is_some());
}

#[tokio::test]
async fn postgres_connection_problems_are_clear_errors() {
    let pg = chimera_testkit::Postgres::start(false);
    let missing = pg.url.replace("/postgres", "/no_such_db");
    let err = chimera_state::open(&missing).await.err().expect("refused");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = chimera_state::open(&format!("postgres://chimera:hunter2@127.0.0.1:{port}/x"))
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("cannot reach the server"), "{msg}");
    assert!(
        !msg.contains("hunter2"),
        "the password must not be shown: {msg}"
    );
    // A role the server does not know: refused at authentication.
    let stranger = pg.url.replace("chimera@", "nobody:secret@");
    let msg = chimera_state::open(&stranger)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("authentication failed"), "{msg}");
    assert!(
        !msg.contains("secret"),
        "the password must not be shown: {msg}"
    );
}
