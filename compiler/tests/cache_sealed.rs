//! The evaluation cache never writes a sensitive value in plaintext: without a key a graph
//! holding one is not cached (and an entry left from before is removed); with a key its graph
//! file is sealed, used while the key opens it, and rebuilt when it does not.

use std::path::Path;

use chimera_compiler::EvalOptions;
use chimera_compiler::cache::{CacheUse, EvalCache};
use chimera_seal::{Key, Keyring, Keys};

const SECRET: &str = "cache-canary-91b2";

fn stack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webapp/main.ncl"),
    )
    .unwrap();
    let src = src.replace("echo hello from", &format!("echo {SECRET} from"));
    assert!(src.contains(SECRET));
    std::fs::write(dir.path().join("main.ncl"), src).unwrap();
    dir
}

fn keys() -> Keys {
    Keys::ring(Keyring::new(
        Key::from_base64(&Key::generate().unwrap(), "test").unwrap(),
        None,
    ))
}

fn graph_files(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read_dir(dir.join(".chimera/cache"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".graph.json"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect()
}

fn leaks(dir: &Path) -> bool {
    std::fs::read_dir(dir.join(".chimera/cache"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let b = std::fs::read(e.path()).unwrap();
            b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
        })
}

#[test]
fn without_a_key_a_graph_with_a_secret_is_not_cached_and_an_old_entry_goes() {
    let dir = stack();
    let cache_dir = dir.path().join(".chimera/cache");
    let opts = EvalOptions::default();
    // An entry sealed with a key, then the key is gone: rebuilt, and not stored again.
    let sealing = EvalCache::new(&cache_dir, "b").with_keys(keys());
    let (c, used) = sealing.compile(dir.path(), &opts);
    assert!(c.graph.is_some());
    assert_eq!(used, CacheUse::Miss);
    assert_eq!(graph_files(dir.path()).len(), 1);

    let plain = EvalCache::new(&cache_dir, "b");
    let (c, used) = plain.compile(dir.path(), &opts);
    assert!(c.graph.is_some());
    assert!(
        matches!(&used, CacheUse::Rebuilt(why) if why.contains("no key is configured")),
        "{used:?}"
    );
    assert!(graph_files(dir.path()).is_empty(), "the entry is removed");
    let (_, used) = plain.compile(dir.path(), &opts);
    assert_eq!(used, CacheUse::Miss, "and never stored");
    assert!(!leaks(dir.path()));
}

#[test]
fn with_a_key_the_graph_is_sealed_used_and_rebuilt_under_another_key() {
    let dir = stack();
    let cache_dir = dir.path().join(".chimera/cache");
    let opts = EvalOptions::default();
    let k1 = keys();
    let cache = EvalCache::new(&cache_dir, "b").with_keys(k1.clone());
    let (fresh, used) = cache.compile(dir.path(), &opts);
    assert_eq!(used, CacheUse::Miss);
    let files = graph_files(dir.path());
    assert_eq!(files.len(), 1);
    assert!(chimera_seal::is_sealed(&files[0]));
    assert!(!leaks(dir.path()));

    let (cached, used) = cache.compile(dir.path(), &opts);
    assert_eq!(used, CacheUse::Hit);
    let (a, b) = (fresh.graph.unwrap(), cached.graph.unwrap());
    assert_eq!(a.hash, b.hash);
    assert_eq!(
        serde_json::to_value(&a.resources).unwrap(),
        serde_json::to_value(&b.resources).unwrap(),
        "the sensitive values come back from the sealed graph"
    );

    // Another key: the entry is rebuilt, sealed with that key; rotation drops the old ones.
    let k2 = keys();
    let other = EvalCache::new(&cache_dir, "b").with_keys(k2.clone());
    let (_, used) = other.compile(dir.path(), &opts);
    assert!(
        matches!(&used, CacheUse::Rebuilt(why) if why.contains("sealed with key")),
        "{used:?}"
    );
    let k2_id = k2.usable().unwrap().key_id().to_string();
    assert_eq!(other.drop_sealed_except(&k2_id), 0);
    assert_eq!(other.drop_sealed_except(k1.usable().unwrap().key_id()), 1);
    assert!(graph_files(dir.path()).is_empty());

    // A tampered sealed graph is never used (its index no longer matches, or it fails to open).
    let (_, _) = other.compile(dir.path(), &opts);
    let path = std::fs::read_dir(&cache_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".graph.json"))
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (c, used) = other.compile(dir.path(), &opts);
    assert!(c.graph.is_some());
    assert!(matches!(used, CacheUse::Rebuilt(_)), "{used:?}");
}

#[test]
fn a_graph_without_a_secret_is_cached_in_plaintext_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.ncl"),
        "let c = import \"chimera.ncl\" in { stack = \"s\", resources = [c.Network & { name = \"n\", cidr = \"10.0.0.0/16\" }] }\n",
    )
    .unwrap();
    let cache = EvalCache::new(dir.path().join(".chimera/cache"), "b");
    cache.compile(dir.path(), &EvalOptions::default());
    let files = graph_files(dir.path());
    assert_eq!(files.len(), 1);
    assert!(!chimera_seal::is_sealed(&files[0]));
    let (_, used) = cache.compile(dir.path(), &EvalOptions::default());
    assert_eq!(used, CacheUse::Hit);
}
