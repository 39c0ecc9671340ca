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
