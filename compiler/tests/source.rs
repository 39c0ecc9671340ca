//! The source seam: an overlay's in-memory files shadow the disk (imports included), a git
//! tree compiles a commit without unpacking it, and the evaluation cache keys on what the
//! source holds.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chimera_compiler::cache::{CacheUse, EvalCache};
use chimera_compiler::{EvalOptions, GitTree, Overlay, Source, compile_from};

const MAIN: &str = r#"let c = import "chimera.ncl" in
let lib = import "lib.ncl" in
{ stack = "seam", resources = [c.Network & { name = "main", cidr = lib.cidr }] }
"#;

fn cidr(c: &chimera_compiler::Compiled) -> String {
    let g = c.graph.as_ref().unwrap_or_else(|| {
        panic!("{}", c.sources.render(&c.diagnostics, false));
    });
    g.resources[0].attrs["cidr"].as_str().unwrap().to_string()
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

#[test]
fn an_overlay_shadows_the_disk_imports_included() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), MAIN).unwrap();
    std::fs::write(dir.path().join("lib.ncl"), "{ cidr = \"10.0.0.0/16\" }").unwrap();
    let opts = EvalOptions::default();
    // Only the imported file is held in memory; main.ncl comes from disk.
    let over: Arc<dyn Source> = Arc::new(Overlay::new(
        dir.path(),
        [("lib.ncl", "{ cidr = \"10.9.0.0/16\" }")],
    ));
    assert_eq!(cidr(&compile_from(&over, dir.path(), &opts)), "10.9.0.0/16");
    // The disk is untouched.
    assert!(
        std::fs::read_to_string(dir.path().join("lib.ncl"))
            .unwrap()
            .contains("10.0.0.0")
    );

    // Files that exist only in memory, in a directory that exists only in memory.
    let empty = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Source> = Arc::new(Overlay::new(
        empty.path(),
        [
            ("stack/main.ncl", MAIN),
            ("stack/lib.ncl", "{ cidr = \"10.8.0.0/16\" }"),
        ],
    ));
    let c = compile_from(&mem, &empty.path().join("stack"), &opts);
    assert_eq!(cidr(&c), "10.8.0.0/16");
    assert!(c.files_read.iter().any(|f| f.ends_with("stack/lib.ncl")));
}

#[test]
fn the_cache_keys_on_what_the_source_holds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), MAIN).unwrap();
    std::fs::write(dir.path().join("lib.ncl"), "{ cidr = \"10.0.0.0/16\" }").unwrap();
    let opts = EvalOptions::default();
    let cache = |lib: &str| {
        let src: Arc<dyn Source> = Arc::new(Overlay::new(dir.path(), [("lib.ncl", lib)]));
        EvalCache::new(dir.path().join(".chimera/cache"), "b").with_source(src)
    };
    let (c, used) = cache("{ cidr = \"10.1.0.0/16\" }").compile(dir.path(), &opts);
    assert_eq!((cidr(&c), used), ("10.1.0.0/16".into(), CacheUse::Miss));
    let (c, used) = cache("{ cidr = \"10.1.0.0/16\" }").compile(dir.path(), &opts);
    assert_eq!(used, CacheUse::Hit);
    assert_eq!(cidr(&c), "10.1.0.0/16");
    // Another in-memory version of the same file is another key.
    let (c, used) = cache("{ cidr = \"10.2.0.0/16\" }").compile(dir.path(), &opts);
    assert!(matches!(used, CacheUse::Rebuilt(_)), "{used:?}");
    assert_eq!(cidr(&c), "10.2.0.0/16");
}

#[test]
fn a_git_tree_compiles_a_commit_without_unpacking_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q"]);
    std::fs::create_dir(repo.join("infra")).unwrap();
    std::fs::write(repo.join("infra/main.ncl"), MAIN).unwrap();
    std::fs::write(repo.join("infra/lib.ncl"), "{ cidr = \"10.3.0.0/16\" }").unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", "v1"]);
    // The working tree moves on, with a broken file.
    std::fs::write(repo.join("infra/lib.ncl"), "{ cidr = ").unwrap();
    let before: Vec<_> = std::fs::read_dir(repo)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();

    let tree = GitTree::open(repo, "HEAD").unwrap();
    assert_eq!(tree.commit().len(), 40);
    assert!(tree.contains(Path::new("infra")));
    assert!(!tree.contains(Path::new("elsewhere")));
    let path = tree.path(Path::new("infra"));
    let tree: Arc<dyn Source> = Arc::new(tree);
    let c = compile_from(&tree, &path, &EvalOptions::default());
    assert_eq!(cidr(&c), "10.3.0.0/16");
    let after: Vec<_> = std::fs::read_dir(repo)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(before, after, "nothing was unpacked");

    // Diagnostics name files as git does: REV:path.
    std::fs::write(repo.join("infra/lib.ncl"), "{ cidr = \"10.3.0.0/33\" }").unwrap();
    git(repo, &["commit", "-qam", "v2"]);
    let tree = GitTree::open(repo, "HEAD").unwrap();
    let path = tree.path(Path::new("infra"));
    let tree: Arc<dyn Source> = Arc::new(tree);
    let c = compile_from(&tree, &path, &EvalOptions::default());
    let text = c.sources.render(&c.diagnostics, false);
    assert!(text.contains("HEAD:infra/"), "{text}");

    assert!(GitTree::open(repo, "no-such-ref").is_err());
}
