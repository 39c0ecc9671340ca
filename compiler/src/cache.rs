//! The evaluation cache, Nix-style: an evaluation is a pure function of the files it read, the
//! embedded stdlib and the Chimera build, so its lowered graph is stored under
//! `.chimera/cache/` keyed by exactly those, and reused while none of them changed.
//!
//! Per stack entry file and build of Chimera (the stem names both: two builds on one checkout
//! keep an entry each, and at most two builds' entries are kept per stack) there is an
//! **index** (`<stem>.index.json`: the files read with their
//! blake3, the stdlib digest, the build id, the graph's hash and the blake3 of the graph file,
//! and an integrity hash over all of it) and a **graph** (`<stem>.graph.json`). An entry is used
//! only if every check passes; anything else (corrupt, truncated, foreign, another build) is
//! ignored and rebuilt, never trusted. Entries are written to a temporary file and renamed, the
//! index last. Only clean compilations (no diagnostics at all) are cached.
//!
//! A **plan memo** (`<stem>.memo.json`) records that planning this graph against one exact state
//! (URL, lineage, serial, the latest generation finished, nothing pending) changed nothing, so an
//! unchanged repository re-plans without evaluating or reading state rows.
//!
//! A graph holding a sensitive value is never written in plaintext: with a key configured
//! ([`EvalCache::with_keys`]) the graph file is sealed (`chimera_seal`, purpose `cache-graph`);
//! without one such a graph is not cached, and an entry left for it is removed. A sealed entry
//! whose key is not configured any more is rebuilt like any other invalid entry.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, GraphDoc};
use chimera_seal::{Keys, purpose};
use std::sync::Arc;

use crate::source::{Disk, Source};
use crate::{Compiled, EvalOptions, compile_from};

const FORMAT: &str = "chimera-eval-cache-4";

/// How a compilation used the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUse {
    /// The stored graph was used; Nickel was not evaluated.
    Hit,
    /// No entry: evaluated (and stored, if clean).
    Miss,
    /// An entry existed but was stale or invalid (the reason); evaluated and rebuilt.
    Rebuilt(String),
}

/// The cache for one directory (`.chimera/cache`), for one build of Chimera.
pub struct EvalCache {
    dir: PathBuf,
    /// Identifies the build: the version and something that changes with every rebuild.
    build: String,
    /// Where the stack's files are read (and digested for the keys).
    source: Arc<dyn Source>,
    /// Seal graphs holding sensitive values with these; none: such graphs are not cached.
    keys: Keys,
}

#[derive(Serialize, Deserialize)]
struct Index {
    format: String,
    build: String,
    stdlib: String,
    entry: String,
    /// Every user file the evaluation read, with its blake3.
    files: Vec<(String, String)>,
    stack: String,
    graph_hash: String,
    /// blake3 of the graph file's bytes.
    graph_file: String,
    resources: usize,
    /// blake3 over everything above.
    integrity: String,
}

impl Index {
    fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for part in [
            &self.format,
            &self.build,
            &self.stdlib,
            &self.entry,
            &self.stack,
            &self.graph_hash,
            &self.graph_file,
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for (f, d) in &self.files {
            h.update(&(f.len() as u64).to_le_bytes());
            h.update(f.as_bytes());
            h.update(d.as_bytes());
        }
        h.update(&(self.resources as u64).to_le_bytes());
        h.finalize().to_hex().to_string()
    }
}

/// What a valid index says about the cached graph, without loading it.
#[derive(Debug, Clone)]
pub struct Cached {
    pub stack: String,
    pub graph_hash: String,
    pub resources: usize,
}

#[derive(Serialize, Deserialize)]
struct Memo<T> {
    key: String,
    value: T,
}

/// The state a plan was made against, as far as a memo needs to know it.
#[derive(Debug, Clone)]
pub struct StateStamp {
    pub url: String,
    pub lineage: Option<String>,
    pub serial: u64,
    /// The latest generation's status and finish time ("" for none).
    pub latest: String,
}

fn file_digest(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(blake3::hash(&bytes).to_hex().to_string())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl EvalCache {
    /// Compiles through `source` instead of the disk; every file read is digested through it.
    pub fn with_source(mut self, source: Arc<dyn Source>) -> Self {
        self.source = source;
        self
    }

    pub fn new(dir: impl Into<PathBuf>, build: impl Into<String>) -> Self {
        EvalCache {
            source: Arc::new(Disk::new()),
            dir: dir.into(),
            build: build.into(),
            keys: Keys::None,
        }
    }

    /// Seals cached graphs that hold a sensitive value with `keys` (without a usable key such
    /// graphs are not cached at all).
    pub fn with_keys(mut self, keys: Keys) -> Self {
        self.keys = keys;
        self
    }

    /// The stack's part of an entry's file names.
    fn path_key(entry: &Path) -> String {
        let h = blake3::hash(entry.to_string_lossy().as_bytes()).to_hex();
        h[..24].to_string()
    }

    /// An entry's file-name stem: the stack's key and this build's, so two builds working on one
    /// checkout (a daemon on the installed binary, a newer CLI) keep an entry each instead of
    /// evicting each other's at every compile.
    fn stem(&self, entry: &Path) -> String {
        let b = blake3::hash(self.build.as_bytes()).to_hex();
        format!("{}-{}", Self::path_key(entry), &b[..12])
    }

    /// Removes this stack's entries from other builds but the most recently written one (and
    /// any from before entries were per build), so a checkout rebuilt many times keeps at most
    /// two entries per stack.
    fn prune_other_builds(&self, entry: &Path) {
        let key = Self::path_key(entry);
        let own = self.stem(entry);
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut others: Vec<(std::time::SystemTime, String)> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".index.json")?.to_string();
                (stem.starts_with(&key) && stem != own).then_some(())?;
                let written = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((written, stem))
            })
            .collect();
        others.sort_by(|a, b| b.0.cmp(&a.0));
        let legacy = |stem: &str| stem.len() == key.len();
        let mut kept = false;
        for (_, stem) in others {
            if !kept && !legacy(&stem) {
                kept = true;
                continue;
            }
            for ext in ["index", "graph", "memo"] {
                let _ = std::fs::remove_file(self.dir.join(format!("{stem}.{ext}.json")));
            }
        }
    }

    fn entry_of(&self, path: &Path) -> PathBuf {
        crate::source::entry(self.source.as_ref(), path)
    }

    /// The digest of a file the evaluation read, as the source has it now.
    fn source_digest(&self, path: &Path) -> Option<String> {
        let bytes = self.source.read(path).ok()?;
        Some(blake3::hash(&bytes).to_hex().to_string())
    }

    fn paths(&self, entry: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let stem = self.stem(entry);
        (
            self.dir.join(format!("{stem}.index.json")),
            self.dir.join(format!("{stem}.graph.json")),
            self.dir.join(format!("{stem}.memo.json")),
        )
    }

    /// The index for `entry` if it is valid and every file it lists is unchanged.
    fn valid_index(&self, entry: &Path) -> Result<Index, String> {
        let (index_path, _, _) = self.paths(entry);
        let bytes = match std::fs::read(&index_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(String::new()),
            Err(e) => return Err(format!("unreadable index ({e})")),
        };
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| format!("corrupt index ({e})"))?;
        if index.integrity != index.digest() {
            return Err("index integrity check failed".into());
        }
        if index.format != FORMAT {
            return Err("another cache format".into());
        }
        if index.build != self.build {
            return Err("made by another build of Chimera".into());
        }
        if index.stdlib != crate::stdlib::digest() {
            return Err("made with another stdlib".into());
        }
        if index.entry != entry.to_string_lossy() {
            return Err("made for another entry file".into());
        }
        for (f, d) in &index.files {
            if self.source_digest(Path::new(f)).as_deref() != Some(d.as_str()) {
                return Err(format!("`{f}` changed"));
            }
        }
        Ok(index)
    }

    /// What the cache holds for the stack at `path`, if it is valid for the files as they are
    /// now — without loading the graph.
    pub fn peek(&self, path: &Path) -> Option<Cached> {
        let entry = self.entry_of(path);
        let index = self.valid_index(&entry).ok()?;
        // The graph file must be intact too, though it is not parsed here.
        let (_, graph_path, _) = self.paths(&entry);
        if file_digest(&graph_path)? != index.graph_file {
            return None;
        }
        Some(Cached {
            stack: index.stack,
            graph_hash: index.graph_hash,
            resources: index.resources,
        })
    }

    fn load(&self, entry: &Path) -> Result<Graph, String> {
        let index = self.valid_index(entry)?;
        let (_, graph_path, _) = self.paths(entry);
        let bytes = std::fs::read(&graph_path).map_err(|e| format!("unreadable graph ({e})"))?;
        if blake3::hash(&bytes).to_hex().as_str() != index.graph_file {
            return Err("graph file does not match its index".into());
        }
        let opened;
        let bytes: &[u8] = if chimera_seal::is_sealed(&bytes) {
            opened = self
                .keys
                .open(purpose::CACHE_GRAPH, &bytes)
                .map_err(|e| format!("sealed graph cannot be opened: {e}"))?;
            &opened.plaintext
        } else {
            &bytes
        };
        let doc: GraphDoc =
            serde_json::from_slice(bytes).map_err(|e| format!("corrupt graph ({e})"))?;
        if doc.hash.to_hex() != index.graph_hash || doc.resources.len() != index.resources {
            return Err("graph does not match its index".into());
        }
        Ok(Graph::from(doc))
    }

    fn store(&self, entry: &Path, compiled: &Compiled) -> std::io::Result<()> {
        let Some(g) = &compiled.graph else {
            return Ok(());
        };
        if !compiled.diagnostics.is_empty() || compiled.files_read.is_empty() {
            return Ok(());
        }
        let mut files = Vec::with_capacity(compiled.files_read.len());
        for f in &compiled.files_read {
            let Some(d) = self.source_digest(f) else {
                return Ok(());
            };
            files.push((f.to_string_lossy().into_owned(), d));
        }
        let (index_path, graph_path, _) = self.paths(entry);
        let secret = g.resources.iter().any(|r| {
            r.sensitive
                .iter()
                .any(|k| r.attrs.get(k).is_some_and(|v| !v.is_null()))
        });
        let ring = self.keys.usable();
        if secret && ring.is_none() {
            // Never a secret in plaintext: no entry, and none left from before.
            for p in [&index_path, &graph_path] {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut graph_bytes = g.to_doc_json()?;
        if let (true, Some(ring)) = (secret, ring) {
            graph_bytes = ring
                .seal(purpose::CACHE_GRAPH, &graph_bytes)
                .map_err(std::io::Error::other)?
                .into_bytes();
        }
        let mut index = Index {
            format: FORMAT.into(),
            build: self.build.clone(),
            stdlib: crate::stdlib::digest(),
            entry: entry.to_string_lossy().into_owned(),
            files,
            stack: g.stack.clone(),
            graph_hash: g.hash.to_hex(),
            graph_file: blake3::hash(&graph_bytes).to_hex().to_string(),
            resources: g.resources.len(),
            integrity: String::new(),
        };
        index.integrity = index.digest();
        write_atomic(&graph_path, &graph_bytes)?;
        write_atomic(&index_path, &serde_json::to_vec(&index)?)?;
        self.prune_other_builds(entry);
        Ok(())
    }

    /// Compiles the stack at `path`, from the cache when its entry is valid.
    pub fn compile(&self, path: &Path, opts: &EvalOptions) -> (Compiled, CacheUse) {
        let entry = self.entry_of(path);
        let outcome = match self.load(&entry) {
            Ok(graph) => {
                return (
                    Compiled {
                        graph: Some(graph),
                        diagnostics: Vec::new(),
                        sources: Default::default(),
                        files_read: Vec::new(),
                    },
                    CacheUse::Hit,
                );
            }
            Err(reason) if reason.is_empty() => CacheUse::Miss,
            Err(reason) => CacheUse::Rebuilt(reason),
        };
        let compiled = compile_from(&self.source, path, opts);
        // Best effort: a cache that cannot be written (read-only checkout) only costs speed.
        let _ = self.store(&entry, &compiled);
        (compiled, outcome)
    }

    /// Removes the entries whose graph is sealed with another key than `key_id` (rotation: they
    /// are rebuilt, sealed with the key, on the next compile); returns how many.
    pub fn drop_sealed_except(&self, key_id: &str) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut dropped = 0;
        for entry in dir.flatten() {
            let path = entry.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".graph.json"))
            else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if chimera_seal::key_id_of(&bytes).is_some_and(|k| k != key_id) {
                let _ = std::fs::remove_file(self.dir.join(format!("{stem}.index.json")));
                if std::fs::remove_file(&path).is_ok() {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    fn memo_key(&self, cached: &Cached, state: &StateStamp) -> String {
        let mut h = blake3::Hasher::new();
        for part in [
            "chimera-plan-memo-2",
            &self.build,
            &cached.graph_hash,
            &state.url,
            state.lineage.as_deref().unwrap_or(""),
            &state.serial.to_string(),
            &state.latest,
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    /// The value memoized for the cached graph and exactly this state, if any (the caller
    /// checks it describes that graph).
    pub fn memo<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        cached: &Cached,
        state: &StateStamp,
    ) -> Option<T> {
        let (_, _, memo_path) = self.paths(&self.entry_of(path));
        let memo: Memo<T> = serde_json::from_slice(&std::fs::read(memo_path).ok()?).ok()?;
        (memo.key == self.memo_key(cached, state)).then_some(memo.value)
    }

    /// Memoizes `value` for the graph of hash `graph_hash` planned against `state`, when that
    /// graph is the one cached for `path`.
    pub fn remember<T: Serialize>(
        &self,
        path: &Path,
        graph_hash: &str,
        state: &StateStamp,
        value: &T,
    ) {
        let Some(cached) = self.peek(path) else {
            return;
        };
        if cached.graph_hash != graph_hash {
            return;
        }
        let memo = Memo {
            key: self.memo_key(&cached, state),
            value,
        };
        let (_, _, memo_path) = self.paths(&self.entry_of(path));
        if let Ok(bytes) = serde_json::to_vec(&memo) {
            let _ = write_atomic(&memo_path, &bytes);
        }
    }
}
