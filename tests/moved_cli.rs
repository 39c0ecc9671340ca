//! `moved` through the `chimera` binary: apply the webapp, rename its instances with `moved`
//! entries, plan (the text shows the moves, the JSON carries them), save the plan and apply
//! the file, plan again (empty), with the cloud untouched; and `chimera test` snapshots the
//! move against the state from before it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn chimera(dir: &Path, args: &[&str], key: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("CHIMERA_KEY_FILE", key)
        .env_remove("CHIMERA_STATE")
        .env_remove("CI")
        .output()
        .expect("run chimera")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn webapp() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/webapp/main.ncl"
    ))
    .unwrap()
}

/// The webapp with its web servers renamed `front-N`, and the entries that say so.
fn renamed() -> String {
    webapp()
        .replace(
            "name = \"web-%{std.to_string i}\"",
            "name = \"front-%{std.to_string i}\"",
        )
        .replace(
            "  stack = \"webapp\",\n",
            "  stack = \"webapp\",\n  moved = std.array.generate (fun i => { from = \"instance.web-%{std.to_string i}\", to = \"instance.front-%{std.to_string i}\" }) 3,\n",
        )
}

/// Cloud ids in the local cloud, sorted.
fn cloud(dir: &Path, key: &Path) -> Vec<String> {
    let o = chimera(dir, &["local", "list", "--stack", "webapp"], key);
    assert!(o.status.success(), "{}", text(&o));
    let mut ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_rename_with_moved_entries_plans_applies_and_snapshots_as_a_move() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key_dir = tempfile::tempdir().unwrap();
    let key: PathBuf = key_dir.path().join("key");
    std::fs::write(&key, chimera_seal::Key::generate().unwrap()).unwrap();
    std::fs::write(dir.join("main.ncl"), webapp()).unwrap();

    let o = chimera(dir, &["apply", "-y"], &key);
    assert!(o.status.success(), "{}", text(&o));
    let before = cloud(dir, &key);
    assert_eq!(before.len(), 8, "{before:?}");
    let pulled = chimera(dir, &["state", "pull"], &key);
    assert!(pulled.status.success(), "{}", text(&pulled));

    std::fs::write(dir.join("main.ncl"), renamed()).unwrap();

    // The text plan shows the moves, and nothing destroyed or created.
    let o = chimera(dir, &["plan", "--detailed-exitcode"], &key);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for i in 0..3 {
        assert!(
            t.contains(&format!(
                "# instance.web-{i} has moved to instance.front-{i}\n"
            )),
            "{t}"
        );
    }
    assert!(
        t.contains("Plan: 0 to create, 0 to update, 0 to replace, 0 to delete, 3 to move."),
        "{t}"
    );
    assert!(
        !t.contains("will be destroyed") && !t.contains("will be created"),
        "{t}"
    );

    // The JSON plan carries them.
    let o = chimera(dir, &["plan", "--format", "json"], &key);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(doc["summary"]["move"], 3, "{doc:#}");
    let moved: Vec<(String, String)> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["moved_from"].as_str().unwrap_or("").to_string(),
                c["address"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        moved,
        (0..3)
            .map(|i| (format!("instance.web-{i}"), format!("instance.front-{i}")))
            .collect::<Vec<_>>()
    );

    // A saved plan carries the moves and applies them exactly.
    let o = chimera(dir, &["plan", "--out", "moves.plan"], &key);
    assert!(o.status.success(), "{}", text(&o));
    let o = chimera(dir, &["apply", "moves.plan"], &key);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("0 steps succeeded, 0 failed, 0 skipped, 3 moved."),
        "{t}"
    );

    // Converged, and the cloud is as it was: no new resource, none deleted.
    let o = chimera(dir, &["plan", "--detailed-exitcode"], &key);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(cloud(dir, &key), before);
    let o = chimera(dir, &["state", "list"], &key);
    let t = text(&o);
    assert!(
        t.contains("instance.front-0") && !t.contains("instance.web-0"),
        "{t}"
    );

    // `chimera test` against the state from before the rename shows the move.
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(dir.join("tests/rename.ncl"), "import \"../main.ncl\"\n").unwrap();
    std::fs::write(dir.join("tests/rename.state.json"), &pulled.stdout).unwrap();
    let o = chimera(dir, &["test"], &key);
    assert!(o.status.success(), "{}", text(&o));
    let snap = std::fs::read_to_string(dir.join("tests/snapshots/rename.snap")).unwrap();
    assert!(
        snap.contains("# instance.web-0 has moved to instance.front-0\n"),
        "{snap}"
    );
    assert!(snap.contains("3 to move."), "{snap}");
    let o = chimera(dir, &["test"], &key);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 passed, 0 failed"), "{}", text(&o));
}
