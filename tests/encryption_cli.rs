//! Encryption at rest through the CLI: sealed plan files (E0801 without a key, E0802 with
//! another, E0803 when edited), rollback of a sensitive value with and without a key, and key
//! rotation (docs/security.md).

mod common;

use std::path::{Path, PathBuf};

use common::serve::{chimera_env, webapp_dir};

/// The canary the webapp's `user_data` carries.
const SECRET: &str = "canary-7f3a9e-do-not-leak";

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The webapp example with `SECRET` in every instance's `user_data`.
fn stack() -> tempfile::TempDir {
    let dir = webapp_dir();
    set_secret(dir.path(), SECRET);
    dir
}

fn set_secret(dir: &Path, secret: &str) {
    let main = dir.join("main.ncl");
    let src = std::fs::read_to_string(&main).unwrap();
    let start = src.find("user_data = \"").expect("webapp has user_data") + "user_data = \"".len();
    let end = start + src[start..].find('"').unwrap();
    let new = format!(
        "{}#!/bin/sh\\necho {secret} web-%{{std.to_string i}}\\n{}",
        &src[..start],
        &src[end..]
    );
    std::fs::write(&main, new).unwrap();
}

fn set_size(dir: &Path, size: &str) {
    let main = dir.join("main.ncl");
    let src = std::fs::read_to_string(&main).unwrap();
    let i = src.find("web_size | default = '").unwrap() + "web_size | default = '".len();
    let j = i + src[i..].find(|c: char| !c.is_ascii_alphanumeric()).unwrap();
    std::fs::write(&main, format!("{}{size}{}", &src[..i], &src[j..])).unwrap();
}

/// A key file in its own directory (outside the stack).
struct KeyFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn key_file() -> KeyFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, chimera_seal::Key::generate().unwrap()).unwrap();
    KeyFile { _dir: dir, path }
}

fn run(dir: &Path, args: &[&str], key: Option<&KeyFile>) -> std::process::Output {
    let key_path = key.map(|k| k.path.display().to_string());
    let mut env = vec![];
    if let Some(k) = &key_path {
        env.push(("CHIMERA_KEY_FILE", k.as_str()));
    }
    chimera_env(dir, args, &env)
}

fn rotate(dir: &Path, new: &KeyFile, old: &KeyFile, extra: &[&str]) -> std::process::Output {
    let (n, o) = (
        new.path.display().to_string(),
        old.path.display().to_string(),
    );
    let mut args = vec!["state", "rotate-key", "."];
    args.extend_from_slice(extra);
    chimera_env(
        dir,
        &args,
        &[
            ("CHIMERA_KEY_FILE", n.as_str()),
            ("CHIMERA_FALLBACK_KEY_FILE", o.as_str()),
        ],
    )
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_plan_file_with_a_secret_is_sealed_refused_without_a_key_and_checked() {
    let dir = stack();
    let d = dir.path();
    let key = key_file();
    // Without a key: not saved at all.
    let o = run(d, &["plan", ".", "--out", "p.plan"], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("error[E0801]"), "{}", text(&o));
    assert!(!d.join("p.plan").exists());

    // With a key: sealed, no plaintext, applied with the key.
    let o = run(d, &["plan", ".", "--out", "p.plan"], Some(&key));
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(d.join("p.plan")).unwrap();
    assert!(chimera_seal::is_sealed(&bytes));
    assert!(!contains(&bytes, SECRET));
    assert!(!contains(&bytes, "user_data"), "the whole plan is sealed");

    let o = run(d, &["apply", "p.plan"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("error[E0801]"), "{}", text(&o));
    let other = key_file();
    let o = run(d, &["apply", "p.plan"], Some(&other));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("error[E0802]"), "{}", text(&o));
    let kid = chimera_seal::key_id_of(&bytes).unwrap();
    assert!(text(&o).contains(&kid), "the key id is named: {}", text(&o));

    // One changed byte of the ciphertext: refused, nothing applied.
    let mut env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let ct = env["ciphertext"].as_str().unwrap().to_string();
    let flipped = if ct.starts_with('A') { "B" } else { "A" };
    env["ciphertext"] = format!("{flipped}{}", &ct[1..]).into();
    std::fs::write(d.join("edited.plan"), env.to_string()).unwrap();
    let o = run(d, &["apply", "edited.plan"], Some(&key));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("error[E0803]"), "{}", text(&o));
    std::fs::write(d.join("cut.plan"), &bytes[..bytes.len() / 2]).unwrap();
    let o = run(d, &["apply", "cut.plan"], Some(&key));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("error[E0803]"), "{}", text(&o));
    let o = run(d, &["plan", ".", "--detailed-exitcode"], Some(&key));
    assert_eq!(o.status.code(), Some(2), "nothing applied: {}", text(&o));

    let o = run(d, &["apply", "p.plan"], Some(&key));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Apply complete"), "{}", text(&o));
}

#[test]
fn an_invalid_key_setting_is_a_diagnostic() {
    let dir = stack();
    let o = chimera_env(
        dir.path(),
        &["plan", ".", "--out", "p.plan"],
        &[("CHIMERA_KEY", "not-a-key")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("error[E0800]"), "{}", text(&o));
    let o = chimera_env(
        dir.path(),
        &[
            "plan",
            ".",
            "--out",
            "p.plan",
            "--key-file",
            "/nonexistent/chimera.key",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("error[E0800]"), "{}", text(&o));
}

#[test]
fn rollback_without_a_key_takes_an_unchanged_secret_from_the_configuration() {
    let dir = stack();
    let d = dir.path();
    assert!(run(d, &["apply", "-y", "."], None).status.success());
    set_size(d, "medium");
    assert!(run(d, &["apply", "-y", "."], None).status.success());
    // The secret did not change: the configuration has it.
    let o = run(d, &["rollback", "1", "-y", "."], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Apply complete"), "{}", text(&o));

    // The secret changed since generation 1: state has only its digest, and no key.
    set_secret(d, "another-secret-entirely");
    assert!(run(d, &["apply", "-y", "."], None).status.success());
    let o = run(d, &["rollback", "1", "-y", "."], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("error[E0201]"), "{}", text(&o));
    assert!(!contains(
        &std::fs::read(d.join(".chimera/state.db")).unwrap(),
        SECRET
    ));
}

#[test]
fn with_a_key_state_keeps_secrets_sealed_so_rollback_restores_them_and_rotation_reseals() {
    let dir = stack();
    let d = dir.path();
    let key = key_file();
    assert!(run(d, &["apply", "-y", "."], Some(&key)).status.success());
    set_secret(d, "a-newer-secret");
    set_size(d, "medium");
    assert!(run(d, &["apply", "-y", "."], Some(&key)).status.success());
    assert!(!contains(
        &std::fs::read(d.join(".chimera/state.db")).unwrap(),
        SECRET
    ));

    // Rotate to a new key; the old one is only the fallback.
    let new = key_file();
    let o = run(
        d,
        &["plan", ".", "--out", "p.plan", "--refresh=false"],
        Some(&key),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = rotate(d, &new, &key, &["--plan", "p.plan"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("sensitive value(s) in state resealed (0 already)"),
        "{t}"
    );
    assert!(!t.contains(": 0 sensitive value(s)"), "{t}");
    assert!(t.contains("1 plan file(s) resealed"), "{t}");
    assert_eq!(
        chimera_seal::key_id_of(&std::fs::read(d.join("p.plan")).unwrap()),
        Some(
            chimera_seal::Keys::from_lookup(|n| {
                (n == "CHIMERA_KEY_FILE").then(|| new.path.display().to_string())
            })
            .usable()
            .unwrap()
            .key_id()
            .to_string()
        )
    );
    // Without the key, the sealed value is named as needing one.
    let o = run(d, &["rollback", "1", "-y", "."], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("error[E0801]"), "{}", text(&o));
    // The old key alone no longer opens anything.
    let o = run(d, &["rollback", "1", "-y", "."], Some(&key));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("error[E0802]"), "{}", text(&o));
    // The new key alone restores generation 1's secret, which the configuration no longer has.
    let o = run(d, &["rollback", "1", "-y", "."], Some(&new));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Apply complete"), "{}", text(&o));
    let o = run(d, &["plan", ".", "--refresh=false"], Some(&new));
    assert!(
        text(&o).contains("user_data"),
        "the configuration's newer secret differs from the restored one: {}",
        text(&o)
    );
    assert!(!text(&o).contains(SECRET));
}
