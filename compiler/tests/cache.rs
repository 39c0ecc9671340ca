//! The evaluation cache: hits while nothing the evaluation read changed, rebuilds on any
//! change, and never trusts a corrupt or foreign entry.

use std::path::Path;

use chimera_compiler::EvalOptions;
use chimera_compiler::cache::{CacheUse, EvalCache, StateStamp};

const MAIN: &str = r#"let c = import "chimera.ncl" in
let lib = import "lib.ncl" in
{ stack = "cached", resources = [c.Network & { name = "main", cidr = lib.cidr }] }
"#;

fn setup() -> (tempfile::TempDir, EvalCache) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), MAIN).unwrap();
    std::fs::write(dir.path().join("lib.ncl"), "{ cidr = \"10.0.0.0/16\" }\n").unwrap();
    let cache = EvalCache::new(dir.path().join(".chimera/cache"), "build-1");
    (dir, cache)
}

fn compile(cache: &EvalCache, dir: &Path) -> (chimera_compiler::Compiled, CacheUse) {
    cache.compile(dir, &EvalOptions::default())
}

fn cache_files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join(".chimera/cache"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

#[test]
fn an_unchanged_stack_is_not_evaluated_again() {
    let (dir, cache) = setup();
    let (first, used) = compile(&cache, dir.path());
    assert_eq!(used, CacheUse::Miss);
    let g1 = first.graph.expect("compiles");
    assert_eq!(first.files_read.len(), 2, "{:?}", first.files_read);

    let (second, used) = compile(&cache, dir.path());
    assert_eq!(used, CacheUse::Hit);
    // Nothing was evaluated: no source was even loaded.
    assert!(second.sources.is_empty());
    let g2 = second.graph.expect("cached graph");
    assert_eq!(g1.hash, g2.hash);
    assert_eq!(g1.resources.len(), g2.resources.len());
    assert_eq!(g1.edges, g2.edges);
    // The rebuilt graph is the fresh one, resource for resource.
    assert_eq!(
        serde_json::to_value(&g1.resources).unwrap(),
        serde_json::to_value(&g2.resources).unwrap()
    );
    assert_eq!(g1.graph.edge_count(), g2.graph.edge_count());
}

#[test]
fn a_change_to_any_file_read_re_evaluates() {
    let (dir, cache) = setup();
    compile(&cache, dir.path());
    std::fs::write(dir.path().join("lib.ncl"), "{ cidr = \"10.1.0.0/16\" }\n").unwrap();
    let (c, used) = compile(&cache, dir.path());
    match used {
        CacheUse::Rebuilt(why) => {
            assert!(why.contains("lib.ncl") && why.contains("changed"), "{why}")
        }
        other => panic!("expected a rebuild, got {other:?}"),
    }
    let g = c.graph.unwrap();
    assert_eq!(g.resources[0].attrs["cidr"], "10.1.0.0/16");
    assert_eq!(compile(&cache, dir.path()).1, CacheUse::Hit);
    // Whitespace is a content change too (the key is the bytes, not the meaning).
    std::fs::write(dir.path().join("main.ncl"), format!("{MAIN}\n")).unwrap();
    assert!(matches!(
        compile(&cache, dir.path()).1,
        CacheUse::Rebuilt(_)
    ));
}

#[test]
fn corrupt_and_foreign_entries_are_ignored_and_rebuilt() {
    let (dir, cache) = setup();
    compile(&cache, dir.path());
    let expected = compile(&cache, dir.path()).0.graph.unwrap().hash;

    // A damaged graph file.
    for f in cache_files(dir.path(), ".graph.json") {
        let mut bytes = std::fs::read(&f).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0x20;
        std::fs::write(&f, bytes).unwrap();
    }
    let (c, used) = compile(&cache, dir.path());
    assert!(
        matches!(&used, CacheUse::Rebuilt(w) if w.contains("graph")),
        "{used:?}"
    );
    assert_eq!(c.graph.unwrap().hash, expected);
    assert_eq!(compile(&cache, dir.path()).1, CacheUse::Hit);

    // A truncated index.
    for f in cache_files(dir.path(), ".index.json") {
        std::fs::write(&f, b"{\"format\":").unwrap();
    }
    assert!(
        matches!(compile(&cache, dir.path()).1, CacheUse::Rebuilt(w) if w.contains("corrupt index"))
    );

    // An index edited to point elsewhere fails its integrity check.
    for f in cache_files(dir.path(), ".index.json") {
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, text.replace("\"resources\":1", "\"resources\":2")).unwrap();
    }
    assert!(
        matches!(compile(&cache, dir.path()).1, CacheUse::Rebuilt(w) if w.contains("integrity"))
    );

    // Another build keeps its own entry, and an index copied under its name (as if it had
    // written it) is not trusted: the build is checked inside the index, not only by the name.
    let other = EvalCache::new(dir.path().join(".chimera/cache"), "build-2");
    let own = cache_files(dir.path(), ".index.json");
    assert_eq!(
        other.compile(dir.path(), &EvalOptions::default()).1,
        CacheUse::Miss
    );
    let theirs: Vec<_> = cache_files(dir.path(), ".index.json")
        .into_iter()
        .filter(|f| !own.contains(f))
        .collect();
    assert_eq!(theirs.len(), 1);
    std::fs::copy(&own[0], &theirs[0]).unwrap();
    assert!(
        matches!(other.compile(dir.path(), &EvalOptions::default()).1, CacheUse::Rebuilt(w) if w.contains("another build"))
    );
}

#[test]
fn two_builds_on_one_checkout_keep_an_entry_each() {
    // A daemon on the installed binary and a newer CLI compile the same stack in turn: neither
    // evicts the other's entry (each compile after the first is a hit).
    let (dir, daemon) = setup();
    let cli = EvalCache::new(dir.path().join(".chimera/cache"), "build-2");
    assert_eq!(compile(&daemon, dir.path()).1, CacheUse::Miss);
    assert_eq!(compile(&cli, dir.path()).1, CacheUse::Miss);
    for _ in 0..2 {
        assert_eq!(compile(&daemon, dir.path()).1, CacheUse::Hit);
        assert_eq!(compile(&cli, dir.path()).1, CacheUse::Hit);
    }
    assert_eq!(cache_files(dir.path(), ".index.json").len(), 2);
    // A checkout rebuilt again and again keeps at most two builds' entries per stack: a third
    // build's entry replaces the older of the other two.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let third = EvalCache::new(dir.path().join(".chimera/cache"), "build-3");
    assert_eq!(compile(&third, dir.path()).1, CacheUse::Miss);
    assert_eq!(cache_files(dir.path(), ".index.json").len(), 2);
    assert_eq!(cache_files(dir.path(), ".graph.json").len(), 2);
    assert_eq!(compile(&cli, dir.path()).1, CacheUse::Hit);
    assert_eq!(compile(&daemon, dir.path()).1, CacheUse::Miss);
}

#[test]
fn stacks_with_diagnostics_are_not_cached() {
    let (dir, cache) = setup();
    std::fs::write(dir.path().join("lib.ncl"), "{ cidr = \"10.0.0.1/16\" }\n").unwrap();
    let (c, used) = compile(&cache, dir.path());
    assert_eq!(used, CacheUse::Miss);
    assert!(c.has_errors());
    assert_eq!(compile(&cache, dir.path()).1, CacheUse::Miss);
    assert!(cache_files(dir.path(), ".index.json").is_empty());
}

#[test]
fn a_plan_memo_holds_for_exactly_one_state() {
    let (dir, cache) = setup();
    let g = compile(&cache, dir.path()).0.graph.unwrap();
    let cached = cache.peek(dir.path()).expect("a valid entry");
    assert_eq!(cached.graph_hash, g.hash.to_hex());
    // What planning this graph against generation 3 found (the caller's value).
    let noop = vec![g.stack.clone(), "no-op".into()];
    let stamp = StateStamp {
        url: "sqlite://s.db".into(),
        lineage: Some("l".into()),
        serial: 3,
        latest: "complete t".into(),
    };
    assert!(
        cache
            .memo::<Vec<String>>(dir.path(), &cached, &stamp)
            .is_none()
    );
    // A value for another graph is not remembered.
    cache.remember(dir.path(), "another-graph", &stamp, &noop);
    assert!(
        cache
            .memo::<Vec<String>>(dir.path(), &cached, &stamp)
            .is_none()
    );
    cache.remember(dir.path(), &g.hash.to_hex(), &stamp, &noop);
    let memo: Vec<String> = cache.memo(dir.path(), &cached, &stamp).expect("memoized");
    assert_eq!(memo, noop);
    // Any other state, or another graph, misses.
    for other in [
        StateStamp {
            serial: 4,
            ..stamp.clone()
        },
        StateStamp {
            latest: "partial t2".into(),
            ..stamp.clone()
        },
        StateStamp {
            url: "postgres://x/y".into(),
            ..stamp.clone()
        },
    ] {
        assert!(
            cache
                .memo::<Vec<String>>(dir.path(), &cached, &other)
                .is_none(),
            "{other:?}"
        );
    }
    std::fs::write(dir.path().join("lib.ncl"), "{ cidr = \"10.2.0.0/16\" }\n").unwrap();
    assert!(
        cache.peek(dir.path()).is_none(),
        "a changed file invalidates the entry"
    );
}
