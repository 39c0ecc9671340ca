//! With a key configured, what the daemon writes (`Stack::reconcile`, the heart of `chimera
//! serve`) keeps its sensitive values sealed in state as an apply does, so a rollback past a
//! heal or a GitOps apply restores a secret the configuration no longer has. In plaintext the
//! secret is nowhere in Chimera's files (the simulated cloud's own file excepted).

use std::path::Path;

use chimera_model::Address;
use chimera_plans::Plan;
use chimera_seal::{Key, Keyring, Keys};
use chimera_workflow::{ApplyRequest, HealMode, LocalChange, ReconcileOptions, Settings, Stack};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn key() -> Keys {
    let text = Key::generate().unwrap();
    Keys::ring(Keyring::new(Key::from_base64(&text, "test").unwrap(), None))
}

/// The webapp example with `secret` in every instance's `user_data`.
fn write_webapp(dir: &Path, secret: &str) {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webapp/main.ncl"),
    )
    .unwrap();
    let old = "user_data = \"#!/bin/sh\\necho hello from web-";
    assert!(src.contains(old), "webapp's user_data");
    let new = format!("user_data = \"#!/bin/sh\\necho {secret} from web-");
    std::fs::write(dir.join("main.ncl"), src.replace(old, &new)).unwrap();
}

/// The stack as a person's CLI opens it.
fn open(dir: &Path, keys: &Keys) -> Stack {
    open_as(dir, keys, "person@example.com")
}

/// The stack as the daemon opens it (`chimera serve` passes its keys in the settings).
fn daemon(dir: &Path, keys: &Keys) -> Stack {
    open_as(dir, keys, "reconciler@chimera")
}

fn open_as(dir: &Path, keys: &Keys, actor: &str) -> Stack {
    Stack::open(
        dir,
        Settings {
            actor: actor.into(),
            keys: keys.clone(),
            ..Settings::default()
        },
    )
}

fn yes(_: &Plan) -> bool {
    true
}

fn no_refresh() -> ApplyRequest {
    ApplyRequest {
        refresh: false,
        ..ApplyRequest::default()
    }
}

/// The digests state holds in place of the instances' `user_data`.
async fn user_data_digests(stack: &mut Stack) -> Vec<String> {
    let mut out: Vec<String> = stack
        .state_rows()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.attrs.get("user_data"))
        .map(|v| {
            v.get("$sensitive")
                .and_then(|d| d.as_str())
                .unwrap_or_else(|| panic!("user_data is kept as a digest, not {v}"))
                .to_string()
        })
        .collect();
    out.sort();
    out
}

/// Asserts each digest is sealed in state with `keys`' key, and the envelopes hold no plaintext.
async fn assert_sealed(stack: &mut Stack, digests: &[String], keys: &Keys, secret: &str) {
    let key_id = keys.usable().unwrap().key_id().to_string();
    let store = stack.store().await.unwrap();
    let rows = store.sealed("webapp", Some(digests)).await.unwrap();
    let mut sealed: Vec<String> = rows.iter().map(|r| r.digest.clone()).collect();
    sealed.sort();
    assert_eq!(sealed, digests, "every instance's user_data is sealed");
    for r in &rows {
        assert_eq!(r.key_id, key_id);
        assert!(!r.envelope.contains(secret));
    }
}

/// No file Chimera wrote under the stack (state, cache, plan memo) holds `secret` in plaintext;
/// the local cloud's file is the cloud, which stores what it is given.
fn assert_no_plaintext(dir: &Path, secret: &str) {
    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                files(&path, out);
            } else if !e.file_name().to_string_lossy().contains("cloud") {
                out.push(path);
            }
        }
    }
    let mut found = Vec::new();
    files(&dir.join(".chimera"), &mut found);
    assert!(!found.is_empty(), "the state database is under .chimera");
    for path in found {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
}

/// The last generation's serial; the daemon made it.
async fn last_serial(stack: &mut Stack) -> u64 {
    let history = stack.history().await.unwrap();
    let last = history.iter().max_by_key(|g| g.serial).unwrap();
    assert_eq!(last.actor, "reconciler@chimera");
    last.serial
}

/// Rolls back to `generation` and checks the instances hold that generation's values again.
async fn rollback_restores(dir: &Path, keys: &Keys, generation: u64, digests: &[String]) {
    let mut stack = open(dir, keys);
    let r = stack
        .rollback(generation, &no_refresh(), yes)
        .await
        .unwrap();
    assert!(r.ok(), "{:?}", r.report);
    assert!(
        r.plan.has_changes(),
        "the secret changed since generation {generation}"
    );
    assert_eq!(user_data_digests(&mut stack).await, digests);
}

#[test]
fn a_gitops_apply_by_the_daemon_keeps_the_new_secret_sealed_for_rollback() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keys = key();
        write_webapp(d, "first-secret-3c1d");
        assert!(open(d, &keys).apply(&no_refresh(), yes).await.unwrap().ok());

        // The daemon, in GitOps mode, applies a new secret: only it ever saw that value.
        write_webapp(d, "daemon-secret-8e2f");
        let mut stack = daemon(d, &keys);
        let opts = ReconcileOptions {
            mode: HealMode::Auto,
            gitops: true,
            ..ReconcileOptions::default()
        };
        let r = stack
            .reconcile(&opts, &ApplyRequest::default())
            .await
            .unwrap();
        assert!(r.healed(), "{:?}", r.report);
        let generation = last_serial(&mut stack).await;
        let by_daemon = user_data_digests(&mut stack).await;
        assert_eq!(by_daemon.len(), 3);
        assert_sealed(&mut stack, &by_daemon, &keys, "daemon-secret-8e2f").await;

        // The configuration moves on; rolling back to the daemon's generation needs its secret,
        // which only the sealed values have.
        write_webapp(d, "third-secret-51aa");
        assert!(open(d, &keys).apply(&no_refresh(), yes).await.unwrap().ok());
        assert_ne!(user_data_digests(&mut open(d, &keys)).await, by_daemon);
        rollback_restores(d, &keys, generation, &by_daemon).await;
        for secret in [
            "first-secret-3c1d",
            "daemon-secret-8e2f",
            "third-secret-51aa",
        ] {
            assert_no_plaintext(d, secret);
        }
    });
}

#[test]
fn a_heal_by_the_daemon_keeps_secrets_sealed_that_were_applied_before_a_key() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Applied before any key was configured: state holds digests only.
        write_webapp(d, "early-secret-77b0");
        assert!(
            open(d, &Keys::None)
                .apply(&no_refresh(), yes)
                .await
                .unwrap()
                .ok()
        );
        let early = user_data_digests(&mut open(d, &Keys::None)).await;
        let none = open(d, &Keys::None)
            .store()
            .await
            .unwrap()
            .sealed("webapp", None)
            .await
            .unwrap();
        assert!(none.is_empty(), "nothing sealed without a key");

        // An instance is deleted behind Chimera's back; the daemon, now with a key, heals it.
        let keys = key();
        let web1: Address = "instance.web-1".parse().unwrap();
        open(d, &keys)
            .local_mutate(&web1, &LocalChange::Delete)
            .await
            .unwrap();
        let mut stack = daemon(d, &keys);
        let opts = ReconcileOptions {
            mode: HealMode::Auto,
            ..ReconcileOptions::default()
        };
        let r = stack
            .reconcile(&opts, &ApplyRequest::default())
            .await
            .unwrap();
        assert!(r.healed(), "{:?}", r.report);
        let healed = last_serial(&mut stack).await;
        assert_eq!(user_data_digests(&mut stack).await, early);
        assert_sealed(&mut stack, &early, &keys, "early-secret-77b0").await;

        // A new secret is applied; the heal's generation is restored from the sealed values.
        write_webapp(d, "later-secret-0d9c");
        assert!(open(d, &keys).apply(&no_refresh(), yes).await.unwrap().ok());
        rollback_restores(d, &keys, healed, &early).await;
        for secret in ["early-secret-77b0", "later-secret-0d9c"] {
            assert_no_plaintext(d, secret);
        }
    });
}
