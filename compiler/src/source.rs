//! The source seam: where the compiler's input files come from (like tvix's `EvalIO`).
//!
//! - [`Disk`]: the filesystem (what the CLI compiles).
//! - [`Overlay`]: files held in memory over a directory; the rest is read from the directory.
//!   An agent compiles a proposed edit without writing it.
//! - [`GitTree`]: the files of one commit, read from the repository with the git CLI, never
//!   unpacked to disk (`chimera preview --base REF`).
//!
//! Nickel resolves imports itself, by path. A source's in-memory files are registered with
//! Nickel before evaluation under absolute paths; an in-memory file takes precedence over the
//! disk at the same path, and a path under a [`GitTree`]'s virtual root exists only in memory.
//! Whatever the source, the evaluation cache keys on every file read, through [`Source::read`].
//!
//! **Architecture Invariant:** the compiler reads input files, the current directory and git
//! only through a `Source`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Where a compilation reads its files.
pub trait Source: Send + Sync {
    /// `path` made absolute (a relative path is relative to the source's base).
    fn absolute(&self, path: &Path) -> PathBuf;
    /// Whether `path` (absolute) is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// The bytes of the file at `path` (absolute).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Files held in memory, by absolute path: registered with Nickel before evaluation, where
    /// they take precedence over the disk.
    fn in_memory(&self) -> Vec<(PathBuf, Arc<str>)>;
    /// How a file is named in diagnostics.
    fn display(&self, path: &str) -> String;
}

/// The stack entry file for `path`: `main.ncl` in a directory, or the file itself; absolute.
pub fn entry(source: &dyn Source, path: &Path) -> PathBuf {
    let abs = source.absolute(path);
    if source.is_dir(&abs) {
        abs.join("main.ncl")
    } else {
        abs
    }
}

/// The files a source holds in memory, as [`Source::in_memory`] hands them over.
fn held(files: &BTreeMap<PathBuf, Arc<str>>) -> Vec<(PathBuf, Arc<str>)> {
    files.iter().map(|(p, t)| (p.clone(), t.clone())).collect()
}

fn strip_prefix_display(path: &str, base: Option<&Path>) -> String {
    match base {
        Some(b) => Path::new(path)
            .strip_prefix(b)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| path.to_string()),
        None => path.to_string(),
    }
}

/// The filesystem. Relative paths and diagnostic names are relative to the current directory
/// when it was created.
#[derive(Debug, Clone)]
pub struct Disk {
    cwd: Option<PathBuf>,
}

impl Disk {
    /// Relative to the process's current directory.
    pub fn new() -> Self {
        Self::at(std::env::current_dir().ok())
    }

    /// Relative to `cwd` (a caller that must not read the environment passes it in).
    pub fn at(cwd: Option<PathBuf>) -> Self {
        Disk { cwd }
    }
}

impl Default for Disk {
    fn default() -> Self {
        Self::new()
    }
}

impl Source for Disk {
    fn absolute(&self, path: &Path) -> PathBuf {
        match &self.cwd {
            _ if path.is_absolute() => path.to_path_buf(),
            Some(cwd) => cwd.join(path),
            None => path.to_path_buf(),
        }
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn in_memory(&self) -> Vec<(PathBuf, Arc<str>)> {
        Vec::new()
    }
    fn display(&self, path: &str) -> String {
        strip_prefix_display(path, self.cwd.as_deref())
    }
}

/// Files held in memory over a directory: a path the overlay holds reads from memory, any
/// other from the directory. Names in diagnostics are relative to the directory.
#[derive(Debug, Clone)]
pub struct Overlay {
    root: PathBuf,
    files: BTreeMap<PathBuf, Arc<str>>,
}

impl Overlay {
    /// `files` are relative to `root` (an absolute directory, or relative to the current
    /// directory).
    pub fn new(
        root: impl Into<PathBuf>,
        files: impl IntoIterator<Item = (impl Into<PathBuf>, impl Into<String>)>,
    ) -> Self {
        let root = Disk::new().absolute(&root.into());
        let files = files
            .into_iter()
            .map(|(p, t)| (root.join(p.into()), Arc::from(t.into())))
            .collect();
        Overlay { root, files }
    }

    /// Holds `text` at `path` (relative to the root) in memory too.
    pub fn with(mut self, path: impl AsRef<Path>, text: impl Into<String>) -> Self {
        self.files
            .insert(self.root.join(path), Arc::from(text.into()));
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Source for Overlay {
    fn absolute(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        }
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir() || self.files.keys().any(|f| f.starts_with(path) && f != path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self.files.get(path) {
            Some(t) => Ok(t.as_bytes().to_vec()),
            None => std::fs::read(path),
        }
    }
    fn in_memory(&self) -> Vec<(PathBuf, Arc<str>)> {
        held(&self.files)
    }
    fn display(&self, path: &str) -> String {
        strip_prefix_display(path, Some(&self.root))
    }
}

/// The files of one commit of a git repository, read with the git CLI into memory. Paths live
/// under a virtual root that exists nowhere on disk; diagnostics name files `REV:path`, as git
/// does.
#[derive(Debug, Clone)]
pub struct GitTree {
    rev: String,
    commit: String,
    root: PathBuf,
    files: BTreeMap<PathBuf, Arc<str>>,
}

/// Files of these kinds are read from the tree: what Nickel can import.
const IMPORTABLE: &[&str] = &["ncl", "json", "yaml", "yml", "toml", "txt"];

fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `git` ({e}); git must be on PATH"))?;
    if !out.status.success() {
        return Err(format!(
            "`git {}` in `{}`: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

impl GitTree {
    /// The tree of `rev` in the repository `repo` (its top level).
    pub fn open(repo: &Path, rev: &str) -> Result<GitTree, String> {
        let commit = String::from_utf8_lossy(&git(
            repo,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ],
        )?)
        .trim()
        .to_string();
        let listing = git(repo, &["ls-tree", "-r", "-z", "--full-tree", &commit])?;
        // Each entry: "<mode> <type> <object>\t<path>\0".
        let mut blobs = Vec::new();
        for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, path)) = entry.split_once('\t') else {
                continue;
            };
            let mut meta = meta.split(' ');
            let (Some(_mode), Some("blob"), Some(object)) = (meta.next(), meta.next(), meta.next())
            else {
                continue;
            };
            let importable = Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMPORTABLE.contains(&e));
            if importable {
                blobs.push((path.to_string(), object.to_string()));
            }
        }
        let root = PathBuf::from(format!("/%chimera-git%/{commit}"));
        let files = read_blobs(repo, &blobs)?
            .into_iter()
            .map(|(path, text)| (root.join(path), Arc::from(text)))
            .collect();
        Ok(GitTree {
            rev: rev.to_string(),
            commit,
            root,
            files,
        })
    }

    /// The commit the tree is of.
    pub fn commit(&self) -> &str {
        &self.commit
    }

    /// Where `rel` (a path relative to the repository's top level) lives in this source.
    pub fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Whether the tree has anything at `rel`.
    pub fn contains(&self, rel: &Path) -> bool {
        let p = self.path(rel);
        self.files.contains_key(&p) || self.is_dir(&p)
    }
}

/// Reads blobs with one `git cat-file --batch`.
fn read_blobs(repo: &Path, blobs: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    use std::io::Write;
    if blobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `git cat-file` ({e})"))?;
    let mut input = String::new();
    for (_, object) in blobs {
        input.push_str(object);
        input.push('\n');
    }
    let mut stdin = child.stdin.take().ok_or("git cat-file has no stdin")?;
    // Written on a thread: git answers while we write, and both pipes must keep flowing.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`git cat-file --batch`: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "`git cat-file --batch`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Each answer: "<object> blob <size>\n<content>\n".
    let mut rest = out.stdout.as_slice();
    let mut files = Vec::with_capacity(blobs.len());
    for (path, _) in blobs {
        let nl = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("truncated `git cat-file` output")?;
        let header = String::from_utf8_lossy(&rest[..nl]).to_string();
        let size: usize = header
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("unexpected `git cat-file` header `{header}`"))?;
        let body = rest
            .get(nl + 1..nl + 1 + size)
            .ok_or("truncated `git cat-file` output")?;
        files.push((path.clone(), String::from_utf8_lossy(body).into_owned()));
        rest = rest.get(nl + 2 + size..).unwrap_or_default();
    }
    Ok(files)
}

impl Source for GitTree {
    fn absolute(&self, path: &Path) -> PathBuf {
        if path.starts_with(&self.root) {
            path.to_path_buf()
        } else {
            self.root.join(path.strip_prefix("/").unwrap_or(path))
        }
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.files.keys().any(|f| f.starts_with(path) && f != path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .map(|t| t.as_bytes().to_vec())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("not in the tree of {}", self.rev),
                )
            })
    }
    fn in_memory(&self) -> Vec<(PathBuf, Arc<str>)> {
        held(&self.files)
    }
    fn display(&self, path: &str) -> String {
        match Path::new(path).strip_prefix(&self.root) {
            Ok(rel) => format!("{}:{}", self.rev, rel.display()),
            Err(_) => path.to_string(),
        }
    }
}
