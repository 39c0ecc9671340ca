//! Evaluation: a stack file → plain values with source spans, through nickel-lang-core.
//!
//! **Architecture Invariant:** the Nickel evaluation context lives only inside [`evaluate`]'s worker
//! thread, which frees it right after handing over the result (overlapping the free with the
//! caller's lowering); nothing downstream holds Nickel values.
//! Evaluation is pure: Nickel has no clock, network or environment access, and the stdlib is
//! embedded.
//!
//! Nickel has no way to interrupt an evaluation from outside, so the time and memory limits are
//! enforced by a watchdog and a stop switch in the evaluation cache ([`Interruptible`]): past
//! either limit, [`evaluate`] returns a diagnostic and turns the switch, and the worker fails at
//! the next thunk it forces and frees its heap. A primitive operation that runs long without
//! forcing a thunk (a huge `std.array.generate`) cannot be stopped that way: its worker thread is
//! abandoned, so a caller that hits a limit should exit the process soon (the CLI does).

use chimera_model::codes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chimera_model::{Diagnostic, SourceMap, Span};
use nickel_lang_core::cache::{CacheHub, ImportResolver, InputFormat, SourcePath};
use nickel_lang_core::error::{Error as NickelError, EvalErrorKind, IntoDiagnostics, NullReporter};
use nickel_lang_core::eval::cache::{BlackholedError, Cache, CacheImpl, CacheIndex};
use nickel_lang_core::eval::value::{Container, NickelValue, ValueContentRef};
use nickel_lang_core::eval::{Closure, VirtualMachine, VmContext};
use nickel_lang_core::files::{FileId, Files};
use nickel_lang_core::identifier::Ident;
use nickel_lang_core::position::{PosTable, TermPos};
use nickel_lang_core::term::BindingType;
use nickel_lang_core::term::record::FieldDeps;
use serde_json::{Map, Value};

use crate::source::Source;
use crate::stdlib;

/// Limits for one evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub timeout: Duration,
    /// Resident memory of the whole process above which evaluation is abandoned.
    pub memory_limit: Option<u64>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            timeout: Duration::from_secs(60),
            memory_limit: Some(default_memory_limit()),
        }
    }
}

/// The default memory limit: [`DEFAULT_MEMORY_CAP`], or three quarters of physical memory when
/// that is less.
///
/// Unbounded recursion in Nickel grows the heap by ~250 MB/s on the project's machine
/// (every call stays on Nickel's call stack): with this cap it is diagnosed (E0008) in about
/// 6 s, where three quarters of a 24 GiB machine took over a minute and froze a laptop first.
/// The 100k-instance fleet peaks at ~1.1 GiB while it evaluates (docs/benchmarks.md).
pub fn default_memory_limit() -> u64 {
    physical_memory()
        .map(|t| (t / 4 * 3).min(DEFAULT_MEMORY_CAP))
        .unwrap_or(DEFAULT_MEMORY_CAP)
}

/// The default memory limit's cap (`--eval-memory-mib` raises it).
pub const DEFAULT_MEMORY_CAP: u64 = 3 << 29;

fn physical_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    total
}

/// One resource as evaluated: its fields as JSON, and where each top-level field came from.
#[derive(Debug, Clone)]
pub struct RawResource {
    pub fields: Map<String, Value>,
    /// Span of the resource value itself (the record or the merge that built it).
    pub span: Option<Span>,
    /// Shared with the lowered resource, which needs them for later diagnostics.
    pub field_spans: Arc<[(String, Span)]>,
}

impl RawResource {
    /// Adds `offset` to every span's file index (a module's sources appended to the stack's).
    pub fn shift_files(mut self, offset: u32) -> Self {
        if let Some(s) = &mut self.span {
            s.file += offset;
        }
        self.field_spans = self
            .field_spans
            .iter()
            .map(|(f, s)| {
                (
                    f.clone(),
                    Span {
                        file: s.file + offset,
                        ..*s
                    },
                )
            })
            .collect();
        self
    }

    pub fn field_span(&self, field: &str) -> Option<Span> {
        self.field_spans
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, s)| *s)
    }
}

/// One `moved` entry as evaluated: its addresses as written (the stdlib's contract checked
/// their form), and where the entry and each field were written.
#[derive(Debug, Clone)]
pub struct RawMove {
    pub from: Option<String>,
    pub to: Option<String>,
    pub span: Option<Span>,
    pub from_span: Option<Span>,
    pub to_span: Option<Span>,
}

impl RawMove {
    /// Adds `offset` to every span's file index (a module's sources appended to the stack's).
    pub fn shift_files(mut self, offset: u32) -> Self {
        for s in [&mut self.span, &mut self.from_span, &mut self.to_span]
            .into_iter()
            .flatten()
        {
            s.file += offset;
        }
        self
    }
}

/// The evaluated stack, free of any Nickel value.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub stack: String,
    pub stack_span: Option<Span>,
    /// The stack's optional `providers` record: per-provider settings (e.g. the local
    /// cloud's knobs), as JSON.
    pub provider_settings: Value,
    /// The stack's `reconcile` settings (null when absent).
    pub reconcile: Value,
    pub resources: Vec<RawResource>,
    /// The stdlib's catalog, as evaluated.
    pub catalog: Value,
    /// User files the evaluation read (the entry file and its imports), for cache keys.
    pub files_read: Vec<PathBuf>,
    /// Module files the stack lists (`modules`), relative to the stack file's directory.
    pub modules: Vec<String>,
    /// The stack's (and, once merged, its modules') `moved` entries, in the order written.
    pub moved: Vec<RawMove>,
}

/// An evaluation's outcome with the sources its diagnostics and spans point into.
pub struct EvalOutput {
    pub result: Result<Evaluated, Vec<Diagnostic>>,
    pub sources: SourceMap,
}

/// Evaluates the stack file at `path` (absolute, in `source`) under the given limits.
pub fn evaluate(source: &Arc<dyn Source>, path: &Path, opts: &EvalOptions) -> EvalOutput {
    evaluate_with(source, path, opts, false)
}

/// Evaluates a module file (`{ resources = [...] }`, listed in a stack's `modules`).
pub fn evaluate_module(source: &Arc<dyn Source>, path: &Path, opts: &EvalOptions) -> EvalOutput {
    evaluate_with(source, path, opts, true)
}

/// Evaluates modules in parallel, one Nickel program each (they are `!Send`: each lives and
/// dies on its own thread), at most as many at once as there are cores. Results are in the
/// order of `paths`; each module's Nickel heap is freed as soon as its output is extracted.
pub fn evaluate_modules(
    source: &Arc<dyn Source>,
    paths: &[PathBuf],
    opts: &EvalOptions,
) -> Vec<EvalOutput> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(paths.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<EvalOutput>>> = paths.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let out = evaluate_module(source, path, opts);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(out);
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner().ok().flatten().unwrap_or_else(|| EvalOutput {
                result: Err(vec![Diagnostic::error(codes::INTERNAL, "the evaluator crashed")
                    .detail("a module's evaluation thread stopped without a result; this is a bug in Chimera, please report it")]),
                sources: SourceMap::default(),
            })
        })
        .collect()
}

fn evaluate_with(
    source: &Arc<dyn Source>,
    path: &Path,
    opts: &EvalOptions,
    module: bool,
) -> EvalOutput {
    let shown = source.display(&path.to_string_lossy());
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    // The worker's closure, made afresh for each try: a spawn that fails drops the one it had.
    let job = || {
        let (tx, source, path, stop) =
            (tx.clone(), source.clone(), path.to_path_buf(), stop.clone());
        move || {
            STOP.with(|s| *s.borrow_mut() = stop);
            let mut program = None;
            let out = evaluate_here(source.as_ref(), &path, &mut program, module);
            let _ = tx.send(out);
            // Freeing a large Nickel heap takes a while; do it here, while the caller lowers.
            drop(program);
        }
    };
    let spawn = |stack: usize| {
        std::thread::Builder::new()
            .name("nickel-eval".into())
            .stack_size(stack)
            .spawn(job())
    };
    // A machine that will not map the sized stack still evaluates, on the floor's.
    let worker = spawn(worker_stack(opts.memory_limit)).or_else(|_| spawn(STACK_FLOOR as usize));
    // Only the worker may hold a sender: its end (a panic included) is how a crash shows.
    drop(tx);
    if let Err(e) = worker {
        return EvalOutput {
            result: Err(vec![
                Diagnostic::error(codes::EVALUATOR_UNAVAILABLE, "cannot start the evaluator")
                    .detail(format!("spawning the evaluation thread failed: {e}")),
            ]),
            sources: SourceMap::default(),
        };
    }
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(out) => return out,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return EvalOutput {
                    result: Err(vec![Diagnostic::error(codes::INTERNAL, "the evaluator crashed")
                        .detail("Nickel panicked while evaluating this stack; this is a bug in Chimera or Nickel, please report it with the input")]),
                    sources: SourceMap::default(),
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if start.elapsed() >= opts.timeout {
            give_up(&stop, &rx);
            return limit_diagnostic(
                &shown,
                codes::EVAL_TIMEOUT,
                "evaluation timed out",
                format!(
                    "evaluating the stack took longer than {:.1} s, which usually means infinite recursion or a loop that never ends; check recursive functions and `std.array.generate` sizes, or raise the limit with --eval-timeout",
                    opts.timeout.as_secs_f64()
                ),
            );
        }
        if let (Some(limit), Some(rss)) = (opts.memory_limit, resident_bytes())
            && rss > limit
        {
            give_up(&stop, &rx);
            return limit_diagnostic(
                &shown,
                codes::EVAL_MEMORY,
                "evaluation ran out of memory",
                format!(
                    "evaluating the stack used more than {} MiB, which usually means unbounded recursion or a huge generated value; check recursive functions, or raise the limit with --eval-memory-mib",
                    limit >> 20
                ),
            );
        }
    }
}

/// The evaluation thread's stack. Deeply nested input recurses in Nickel's parser and in our
/// walk (512 MiB covers it), and freeing a stopped runaway recursion recurses too: its heap is
/// one long chain of environments and thunks, which Nickel's types drop one link per stack
/// frame. Measured on the default 1.5 GiB limit (tests/runaway_free.rs, debug build): a 512 MiB
/// stack overflowed and aborted the process, a stack as large as the limit did not. So the stack
/// is [`FREE_STACK_PER_HEAP_BYTE`] times the memory limit. It is address space, not memory: only
/// the pages a drop touches become resident, and the thread returns them when it ends. Without
/// a memory limit (the time limit alone) the stack is sized to the default limit's.
fn worker_stack(memory_limit: Option<u64>) -> usize {
    let heap = memory_limit.unwrap_or_else(default_memory_limit);
    usize::try_from(
        heap.saturating_mul(FREE_STACK_PER_HEAP_BYTE)
            .max(STACK_FLOOR),
    )
    .unwrap_or(usize::MAX)
}

/// The evaluation thread's least stack: what deeply nested input needs.
const STACK_FLOOR: u64 = 512 << 20;

/// Stack bytes reserved per byte of the memory limit: twice what freeing a stopped recursion
/// was measured to need (see [`worker_stack`]).
const FREE_STACK_PER_HEAP_BYTE: u64 = 2;

/// Turns the worker's stop switch and gives it a moment to unwind and free its heap (it fails at
/// the next thunk it forces), so a caller that goes on does not keep a runaway evaluation.
fn give_up(stop: &AtomicBool, rx: &mpsc::Receiver<EvalOutput>) {
    stop.store(true, Ordering::Relaxed);
    let _ = rx.recv_timeout(Duration::from_secs(2));
}

thread_local! {
    /// The stop switch of the evaluation on this thread, picked up by [`Interruptible::new`].
    static STOP: std::cell::RefCell<Arc<AtomicBool>> =
        std::cell::RefCell::new(Arc::new(AtomicBool::new(false)));
}

/// Nickel's evaluation cache with a stop switch: once the watchdog turns it, forcing any thunk
/// fails (as a black hole does), so the evaluation ends with an error instead of running on in
/// an abandoned thread. Everything else is Nickel's own cache.
#[derive(Clone)]
pub(crate) struct Interruptible {
    inner: CacheImpl,
    stop: Arc<AtomicBool>,
}

impl Cache for Interruptible {
    type UpdateIndex = <CacheImpl as Cache>::UpdateIndex;

    fn get(&self, idx: CacheIndex) -> Closure {
        self.inner.get(idx)
    }

    fn get_update_index(
        &mut self,
        idx: &mut CacheIndex,
    ) -> Result<Option<Self::UpdateIndex>, BlackholedError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(BlackholedError);
        }
        self.inner.get_update_index(idx)
    }

    fn add(&mut self, clos: Closure, bty: BindingType) -> CacheIndex {
        self.inner.add(clos, bty)
    }

    fn patch<F: Fn(&mut Closure)>(&mut self, idx: CacheIndex, f: F) {
        self.inner.patch(idx, f)
    }

    fn get_then<T, F: FnOnce(&Closure) -> T>(&self, idx: CacheIndex, f: F) -> T {
        self.inner.get_then(idx, f)
    }

    fn update(&mut self, clos: Closure, idx: Self::UpdateIndex) {
        self.inner.update(clos, idx)
    }

    fn new() -> Self {
        Interruptible {
            inner: CacheImpl::new(),
            stop: STOP.with(|s| s.borrow().clone()),
        }
    }

    fn reset_index_state(&mut self, idx: &mut Self::UpdateIndex) {
        self.inner.reset_index_state(idx)
    }

    fn build_cached(&mut self, idx: &mut CacheIndex, rec_env: &[(Ident, CacheIndex)]) {
        self.inner.build_cached(idx, rec_env)
    }

    fn saturate<I: DoubleEndedIterator<Item = Ident> + Clone>(
        &mut self,
        idx: CacheIndex,
        fields: I,
    ) -> NickelValue {
        self.inner.saturate(idx, fields)
    }

    fn revert(&mut self, idx: &CacheIndex) -> CacheIndex {
        self.inner.revert(idx)
    }

    fn deps(&self, idx: &CacheIndex) -> Option<FieldDeps> {
        self.inner.deps(idx)
    }

    fn make_update_index(
        &mut self,
        idx: &mut CacheIndex,
    ) -> Result<Self::UpdateIndex, BlackholedError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(BlackholedError);
        }
        self.inner.make_update_index(idx)
    }
}

fn limit_diagnostic(
    path: &str,
    code: chimera_model::Code,
    summary: &str,
    detail: String,
) -> EvalOutput {
    // Nickel cannot say where it was when interrupted: point at the stack file.
    let location = chimera_model::Location {
        file: path.to_string(),
        line: 1,
        column: 1,
        end_line: 1,
        end_column: 1,
        span: None,
    };
    EvalOutput {
        result: Err(vec![
            Diagnostic::error(code, summary)
                .detail(detail)
                .at(Some(location)),
        ]),
        sources: SourceMap::default(),
    }
}

/// The process's resident memory, for the evaluation watchdogs (the compiler's and the policy
/// crate's).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Nickel string literal escaping for a path put in generated source.
pub fn nickel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("\\%"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Nickel evaluation context of our own making: the embedded stdlib and the source's
/// in-memory files in Nickel's file cache (not merged into the program, as builder inputs
/// would be), and a generated entry that is the output itself.
pub(crate) struct Vm {
    ctxt: VmContext<CacheHub, Interruptible>,
    main: FileId,
}

impl Vm {
    fn eval_full_for_export(&mut self) -> Result<NickelValue, NickelError> {
        let prepared = self.ctxt.prepare_eval(self.main)?;
        Ok(VirtualMachine::new(&mut self.ctxt).eval_full_for_export(prepared)?)
    }

    fn files(&self) -> Files {
        self.ctxt.import_resolver.files().clone()
    }

    fn pos_table(&self) -> &PosTable {
        &self.ctxt.pos_table
    }
}

/// Raw Nickel evaluation of a stack (what `nickel export` does), with no lowering: the baseline
/// the compiler's benchmark compares against. Runs on the calling thread, without limits.
pub fn evaluate_raw(path: &Path) -> Result<(), String> {
    let disk = crate::source::Disk::new();
    let abs = disk.absolute(path);
    let mut vm = build_program(&disk, abs.to_str().ok_or("non-UTF-8 path")?, false);
    vm.eval_full_for_export()
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

fn build_program(source: &dyn Source, abs_str: &str, module: bool) -> Vm {
    let user = nickel_string(abs_str);
    let lib = nickel_string(&stdlib::virtual_path("chimera.ncl"));
    let entry = if module {
        // A module contributes resources only; the stack's name and settings are the stack's.
        format!(
            "{{ stack = let m = ((import {user}) | (import {lib}).Module) in {{ stack = \"module\", resources = m.resources, moved = if std.record.has_field \"moved\" m then m.moved else [] }}, catalog = null }}"
        )
    } else {
        format!(
            "{{ stack = (import {user}) | (import {lib}).Stack, catalog = (import {lib}).catalog }}"
        )
    };
    let mut cache = CacheHub::new();
    let mut add = |path: PathBuf, text: String| {
        let format = InputFormat::from_path(&path).unwrap_or_default();
        cache
            .sources
            .add_string(SourcePath::Path(path, format), text)
    };
    for (name, text) in stdlib::FILES {
        add(PathBuf::from(stdlib::virtual_path(name)), text.to_string());
    }
    // The source's files held in memory, under their absolute paths: an import finds them
    // there before it looks at the disk.
    for (path, text) in source.in_memory() {
        add(path, text.to_string());
    }
    let main = add(PathBuf::from(stdlib::virtual_path("entry.ncl")), entry);
    cache
        .sources
        .add_import_paths(std::iter::once(PathBuf::from(stdlib::VIRTUAL_DIR)));
    let ctxt = VmContext::new(cache, std::io::sink(), NullReporter {});
    Vm { ctxt, main }
}

/// Evaluates on the current thread. The program is handed back through `keep` so the caller
/// decides when to free it; nothing in the returned output refers to it.
fn evaluate_here(
    source: &dyn Source,
    path: &Path,
    keep: &mut Option<Vm>,
    module: bool,
) -> EvalOutput {
    let mut sources = SourceMap::default();
    let abs = source.absolute(path);
    match source.read(&abs) {
        Err(e) => {
            return EvalOutput {
                result: Err(vec![io_diag(&source.display(&path.to_string_lossy()), &e)]),
                sources,
            };
        }
        Ok(bytes) => {
            if let Some(bad) = chimera_model::diagnostic::InvalidUtf8::find(&bytes) {
                let shown = source.display(&abs.to_string_lossy());
                return EvalOutput {
                    result: Err(vec![not_utf8(&shown, &bytes, bad, &mut sources)]),
                    sources,
                };
            }
        }
    }
    let Some(abs_str) = abs.to_str() else {
        return EvalOutput {
            result: Err(vec![
                Diagnostic::error(codes::STACK_UNREADABLE, "stack path is not valid UTF-8")
                    .detail(format!("rename `{}` to a UTF-8 path", abs.display())),
            ]),
            sources,
        };
    };
    let mut prog = build_program(source, abs_str, module);
    let value = prog.eval_full_for_export();
    let mut files = prog.files();
    let result = match value {
        Ok(v) => {
            let mut conv = SpanConv::new(source, &files, &mut sources);
            walk_output(&v, prog.pos_table(), &mut conv).map(|mut ev| {
                ev.files_read = user_files(&files);
                ev
            })
        }
        Err(e) => Err(nickel_diagnostics(source, e, &mut files, &mut sources)),
    };
    *keep = Some(prog);
    EvalOutput { result, sources }
}

/// A source file that is not UTF-8, located at its first invalid byte (the file is shown with
/// invalid bytes replaced, which leaves every offset before the first one as it was).
fn not_utf8(
    shown: &str,
    bytes: &[u8],
    bad: chimera_model::diagnostic::InvalidUtf8,
    sources: &mut SourceMap,
) -> Diagnostic {
    let text: Arc<str> = Arc::from(String::from_utf8_lossy(bytes).as_ref());
    let end = text[bad.offset..]
        .chars()
        .next()
        .map(|c| bad.offset + c.len_utf8())
        .unwrap_or(bad.offset);
    let file = sources.add(stdlib::display_name(shown), text);
    let location = sources.locate(Span {
        file,
        start: bad.offset as u32,
        end: end as u32,
    });
    Diagnostic::error(codes::SOURCE_NOT_UTF8, "a source file is not valid UTF-8")
        .detail(format!(
            "`{shown}` is not UTF-8 at {}; Nickel reads UTF-8 only: re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or remove the stray bytes",
            bad.describe()
        ))
        .at(location)
}

/// An import Nickel could not read because the file is not UTF-8 (Nickel reports every read
/// failure as "could not find import"): the file is looked up beside the importing file, as
/// Nickel does, and read through `source`.
fn not_utf8_import(
    source: &dyn Source,
    files: &Files,
    sources: &mut SourceMap,
    imported: &str,
    pos: TermPos,
) -> Option<Diagnostic> {
    let importer = match pos {
        TermPos::Original(s) | TermPos::Inherited(s) => Some(s),
        TermPos::None => None,
    };
    let path = Path::new(imported);
    let candidate = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let from = PathBuf::from(files.name(importer?.src_id));
        from.parent()?.join(path)
    };
    let bytes = source.read(&candidate).ok()?;
    let bad = chimera_model::diagnostic::InvalidUtf8::find(&bytes)?;
    let shown = source.display(&candidate.to_string_lossy());
    let mut d = not_utf8(&shown, &bytes, bad, sources);
    let entry_name = stdlib::virtual_path("entry.ncl");
    if let Some(raw) = importer
        && files.name(raw.src_id) != entry_name.as_str()
    {
        let mut conv = SpanConv::new(source, files, sources);
        let span = conv.range(raw.src_id, raw.start.to_usize()..raw.end.to_usize());
        let at = conv.sources.locate(span);
        d = d.label(at, "imported here");
    }
    Some(d)
}

fn io_diag(path: &str, e: &std::io::Error) -> Diagnostic {
    let fix = if e.kind() == std::io::ErrorKind::NotFound {
        "check the path; a stack is a directory with a `main.ncl` or a `.ncl` file".to_string()
    } else {
        format!("check that the file is readable ({e})")
    };
    Diagnostic::error(codes::STACK_UNREADABLE, "cannot read the stack file")
        .detail(format!("`{path}`: {fix}"))
}

fn user_files(files: &Files) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files
        .filenames()
        .filter_map(|n| n.to_str())
        .filter(|n| n.starts_with('/') && !n.starts_with(stdlib::VIRTUAL_DIR))
        .map(PathBuf::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Maps Nickel file ids and spans into our [`SourceMap`], adding each file once.
struct SpanConv<'a> {
    source: &'a dyn Source,
    files: &'a Files,
    sources: &'a mut SourceMap,
    ids: HashMap<FileId, u32>,
    last: Option<(FileId, u32)>,
}

impl<'a> SpanConv<'a> {
    fn new(source: &'a dyn Source, files: &'a Files, sources: &'a mut SourceMap) -> Self {
        SpanConv {
            source,
            files,
            sources,
            ids: HashMap::new(),
            last: None,
        }
    }

    fn file(&mut self, id: FileId) -> u32 {
        if let Some((last, i)) = self.last
            && last == id
        {
            return i;
        }
        if let Some(&i) = self.ids.get(&id) {
            return i;
        }
        let raw = self.files.name(id).to_string_lossy().into_owned();
        let name = self.source.display(&raw);
        let text: Arc<str> = self.files.clone_source(id);
        let i = self.sources.add(stdlib::display_name(&name), text);
        self.ids.insert(id, i);
        self.last = Some((id, i));
        i
    }

    fn span(&mut self, pos: TermPos) -> Option<Span> {
        let raw = match pos {
            TermPos::Original(s) | TermPos::Inherited(s) => s,
            TermPos::None => return None,
        };
        let file = self.file(raw.src_id);
        Some(Span {
            file,
            start: raw.start.to_usize() as u32,
            end: raw.end.to_usize() as u32,
        })
    }

    /// As [`Self::span`], but `None` for a position in a stdlib, ours or Nickel's (e.g. the
    /// inside of `std.array.generate`, which is where a generated value says it comes from).
    fn user_span(&mut self, pos: TermPos) -> Option<Span> {
        let raw = match pos {
            TermPos::Original(s) | TermPos::Inherited(s) => s,
            TermPos::None => return None,
        };
        // Ours under the virtual directory; Nickel's own as `<stdlib/std.ncl>`.
        let name = self.files.name(raw.src_id).to_string_lossy();
        if name.starts_with(stdlib::VIRTUAL_DIR) || name.starts_with('<') {
            return None;
        }
        self.span(pos)
    }

    fn range(&mut self, id: FileId, range: std::ops::Range<usize>) -> Span {
        let file = self.file(id);
        Span {
            file,
            start: range.start as u32,
            end: range.end as u32,
        }
    }
}

/// Nickel's diagnostics as ours. Rendering them can add files (e.g. snippets of contract
/// labels), so spans are resolved against `files` as it is after that.
fn nickel_diagnostics(
    source: &dyn Source,
    e: NickelError,
    files: &mut Files,
    sources: &mut SourceMap,
) -> Vec<Diagnostic> {
    let code = match &e {
        NickelError::ParseErrors(_) => codes::NICKEL_PARSE,
        NickelError::TypecheckError(_) => codes::NICKEL_TYPE,
        NickelError::EvalError(data) => match &data.error {
            EvalErrorKind::BlameError { .. } => codes::CONTRACT_BROKEN,
            EvalErrorKind::MissingFieldDef { .. } => codes::CONTRACT_BROKEN,
            _ => codes::NICKEL_EVAL,
        },
        NickelError::ImportError(_) => codes::IMPORT_UNRESOLVED,
        NickelError::ExportError(_) => codes::NOT_EXPORTABLE,
        NickelError::IOError(_) => codes::STACK_UNREADABLE,
        NickelError::ReplError(_) => codes::NICKEL_EVAL,
    };
    // An import error comes on its own or from the typechecker, which resolves imports too.
    let import = match &e {
        NickelError::ImportError(kind) => Some((**kind).clone()),
        NickelError::TypecheckError(data) => match data.borrow_error() {
            nickel_lang_core::error::TypecheckErrorKind::ImportError(kind) => Some(kind.clone()),
            _ => None,
        },
        _ => None,
    };
    if let Some(nickel_lang_core::error::ImportErrorKind::IOError(imported, _, pos)) = import
        && let Some(d) = not_utf8_import(source, files, sources, &imported, pos)
    {
        return vec![d];
    }
    let raw = e.into_diagnostics(files);
    let files: &Files = files;
    let mut conv = SpanConv::new(source, files, sources);
    let entry_name = stdlib::virtual_path("entry.ncl");
    let mut out = Vec::new();
    for d in raw {
        let mut diag = if d.severity == codespan_reporting::diagnostic::Severity::Warning {
            Diagnostic::warning(code, d.message.clone())
        } else {
            Diagnostic::error(code, d.message.clone())
        };
        let mut primary_set = false;
        // Prefer a primary label in a user file over one in the stdlib.
        let mut labels: Vec<_> = d.labels.iter().collect();
        labels.sort_by_key(|l| {
            let in_stdlib = files
                .name(l.file_id)
                .to_string_lossy()
                .starts_with(stdlib::VIRTUAL_DIR);
            (
                l.style != codespan_reporting::diagnostic::LabelStyle::Primary,
                in_stdlib,
            )
        });
        for l in labels {
            // The generated entry file is ours, not the user's: never point into it.
            if files.name(l.file_id) == entry_name.as_str() {
                continue;
            }
            let span = conv.range(l.file_id, l.range.clone());
            let loc = conv.sources.locate(span);
            if !primary_set {
                diag = diag.at(loc);
                if !l.message.is_empty() {
                    diag.detail = l.message.clone();
                }
                primary_set = true;
            } else {
                diag = diag.label(loc, l.message.clone());
            }
        }
        for n in d.notes {
            diag = diag.note(n);
        }
        if d.message == "infinite recursion" {
            diag = diag.note(
                "inside a record, `x = x` refers to the field itself, not to an outer `let x` or function argument; rename the outer binding (e.g. `let main_net = ...` then `network = main_net`)",
            );
        }
        out.push(diag);
    }
    if out.is_empty() {
        out.push(Diagnostic::error(code, "evaluation failed"));
    }
    out
}

fn record_fields(v: &NickelValue) -> Option<Vec<(String, &NickelValue)>> {
    match v.content_ref() {
        ValueContentRef::Record(Container::Empty) => Some(Vec::new()),
        ValueContentRef::Record(Container::Alloc(record)) => Some(
            record
                .iter_serializable()
                .filter_map(|b| b.ok())
                .map(|(id, val)| (id.to_string(), val))
                .collect(),
        ),
        _ => None,
    }
}

fn array_items(v: &NickelValue) -> Option<Vec<&NickelValue>> {
    match v.content_ref() {
        ValueContentRef::Array(Container::Empty) => Some(Vec::new()),
        ValueContentRef::Array(Container::Alloc(data)) => Some(data.array.iter().collect()),
        _ => None,
    }
}

fn to_json(v: &NickelValue) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Converts an exported value to JSON, replacing a nested resource record (one with `kind` and
/// `outputs.id`) by its id reference, so `subnet = my_subnet` means `my_subnet.outputs.id`.
fn to_json_refs(v: &NickelValue, depth: usize) -> Result<Value, String> {
    if depth > 64 {
        return Err("value is nested more than 64 levels deep".into());
    }
    match v.content_ref() {
        ValueContentRef::Record(Container::Alloc(_)) => {
            let fields = record_fields(v).unwrap_or_default();
            if let Some(id) = resource_id(&fields) {
                return Ok(Value::String(id));
            }
            let mut map = Map::new();
            for (k, fv) in fields {
                map.insert(k, to_json_refs(fv, depth + 1)?);
            }
            Ok(Value::Object(map))
        }
        ValueContentRef::Array(Container::Alloc(data)) => data
            .array
            .iter()
            .map(|item| to_json_refs(item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        ValueContentRef::String(s) => Ok(Value::String(s.to_string())),
        ValueContentRef::Bool(b) => Ok(Value::Bool(b)),
        _ => to_json(v),
    }
}

/// The first `name =` written in a file: where a field was defined when its value carries no
/// position of its own (`resources = std.array.generate ...`, after the `Stack` contract).
fn field_in_text(sources: &SourceMap, file: u32, name: &str) -> Option<Span> {
    let text = &sources.get(file)?.text;
    let mut from = 0;
    while let Some(i) = text[from..].find(name).map(|i| i + from) {
        let end = i + name.len();
        let before_ok = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-'));
        let rest = text[end..].trim_start();
        if before_ok && rest.starts_with('=') && !rest.starts_with("==") && !rest.starts_with("=>")
        {
            return Some(Span {
                file,
                start: i as u32,
                end: end as u32,
            });
        }
        from = end;
    }
    None
}

/// Where field `name` of a record was written (the field's name), if Nickel knows.
fn field_name_pos(v: &NickelValue, name: &str) -> Option<TermPos> {
    match v.content_ref() {
        ValueContentRef::Record(Container::Alloc(record)) => record
            .fields
            .keys()
            .find(|id| id.to_string() == name)
            .map(|id| id.pos),
        _ => None,
    }
}

/// What a value is, for a diagnostic ("a number").
fn value_kind(v: &NickelValue) -> &'static str {
    match v.content_ref() {
        ValueContentRef::Number(_) => "a number",
        ValueContentRef::String(_) => "a string",
        ValueContentRef::Bool(_) => "a boolean",
        ValueContentRef::Null => "null",
        ValueContentRef::EnumVariant(_) => "an enum value",
        ValueContentRef::Array(_) => "an array",
        _ => "not a record",
    }
}

fn resource_id(fields: &[(String, &NickelValue)]) -> Option<String> {
    let has_kind = fields.iter().any(|(k, _)| k == "kind");
    let outputs = fields.iter().find(|(k, _)| k == "outputs")?.1;
    if !has_kind {
        return None;
    }
    let out_fields = record_fields(outputs)?;
    let id = out_fields.iter().find(|(k, _)| k == "id")?.1;
    id.as_string().map(|s| s.to_string())
}

fn walk_output(
    out: &NickelValue,
    pos: &PosTable,
    conv: &mut SpanConv,
) -> Result<Evaluated, Vec<Diagnostic>> {
    let internal = |what: &str| {
        vec![Diagnostic::error(codes::INTERNAL, "internal error").detail(what.to_string())]
    };
    let fields = record_fields(out).ok_or_else(|| internal("output is not a record"))?;
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let stack = get("stack").ok_or_else(|| internal("output has no stack"))?;
    let catalog = to_json(get("catalog").ok_or_else(|| internal("output has no catalog"))?)
        .map_err(|e| internal(&e))?;

    let stack_fields = record_fields(stack).ok_or_else(|| {
        vec![Diagnostic::error(codes::NOT_A_STACK, "the stack file is not a stack")
            .detail("a stack file must evaluate to a record `{ stack = \"name\", resources = [...] }`")
            .at(conv.span(pos.get(stack.pos_idx())).and_then(|s| conv.sources.locate(s)))]
    })?;
    let sget = |name: &str| {
        stack_fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    };
    // The Stack contract guarantees both fields; stay defensive anyway.
    let name_v = sget("stack").ok_or_else(|| internal("stack has no `stack` field"))?;
    let stack_name = name_v
        .as_string()
        .map(|s| s.to_string())
        .ok_or_else(|| internal("`stack` is not a string"))?;
    let stack_span = conv.span(pos.get(name_v.pos_idx()));
    let provider_settings = match sget("providers") {
        None => Value::Null,
        Some(v) => to_json(v).map_err(|e| {
            vec![
                Diagnostic::error(
                    codes::NOT_EXPORTABLE,
                    "the providers record cannot be exported",
                )
                .detail(e)
                .at(conv
                    .span(pos.get(v.pos_idx()))
                    .and_then(|s| conv.sources.locate(s))),
            ]
        })?,
    };
    let reconcile = match sget("reconcile") {
        None => Value::Null,
        Some(v) => to_json(v).map_err(|e| {
            vec![
                Diagnostic::error(
                    codes::NOT_EXPORTABLE,
                    "the reconcile record cannot be exported",
                )
                .detail(e)
                .at(conv
                    .span(pos.get(v.pos_idx()))
                    .and_then(|s| conv.sources.locate(s))),
            ]
        })?,
    };
    let modules = match sget("modules") {
        None => Vec::new(),
        Some(v) => {
            let at = conv
                .span(pos.get(v.pos_idx()))
                .and_then(|s| conv.sources.locate(s));
            let bad = || {
                vec![Diagnostic::error(codes::MODULES_INVALID, "`modules` is not a list of files")
                    .detail("`modules` lists module files relative to the stack file, e.g. `modules = [\"network.ncl\", \"web.ncl\"]`; each evaluates to `{ resources = [...] }`")
                    .at(at.clone())]
            };
            match to_json(v) {
                Ok(Value::Array(items)) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) if !s.is_empty() => Ok(s),
                        _ => Err(bad()),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(bad()),
            }
        }
    };
    let moved = match sget("moved") {
        None => Vec::new(),
        Some(v) => walk_moved(v, stack, pos, conv)?,
    };
    let resources_v =
        sget("resources").ok_or_else(|| internal("stack has no `resources` field"))?;
    // A value made by a function (`std.array.generate`) has no position of its own: such a
    // resource is located at the nearest enclosing array that has one, else at `resources`,
    // else at the stack's name.
    let resources_span = conv
        .user_span(pos.get(resources_v.pos_idx()))
        .or_else(|| field_name_pos(stack, "resources").and_then(|p| conv.user_span(p)))
        .or_else(|| stack_span.and_then(|s| field_in_text(conv.sources, s.file, "resources")))
        .or(stack_span);

    let mut resources = Vec::new();
    let mut diags = chimera_model::diagnostic::Folder::default();
    // Flatten nested arrays iteratively (deep nesting must not overflow the stack).
    let mut todo: Vec<(&NickelValue, usize, Option<Span>)> = vec![(resources_v, 0, None)];
    while let Some((v, depth, enclosing)) = todo.pop() {
        let span = conv.user_span(pos.get(v.pos_idx())).or(enclosing);
        if let Some(items) = array_items(v) {
            let span = span.or(resources_span);
            if depth > 16 {
                diags.push(
                    Diagnostic::error(codes::TOO_DEEP, "resources are nested too deeply")
                        .detail("`resources` may contain arrays of resources up to 16 levels deep; flatten it with `std.array.flatten`")
                        .at(span.and_then(|s| conv.sources.locate(s))),
                );
                continue;
            }
            for item in items.into_iter().rev() {
                todo.push((item, depth + 1, span));
            }
            continue;
        }
        let Some(fields) = record_fields(v) else {
            diags.push(
                Diagnostic::error(codes::NOT_A_STACK, "a resource is not a record")
                    .detail(format!("every element of `resources` must be a resource record built from a schema, e.g. `c.Instance & {{ name = \"web\", ... }}`; this one is {}", value_kind(v)))
                    .at(span.or(resources_span).and_then(|s| conv.sources.locate(s))),
            );
            continue;
        };
        let mut map = Map::new();
        let mut field_spans = Vec::with_capacity(fields.len());
        for (k, fv) in fields {
            if let Some(s) = conv.span(pos.get(fv.pos_idx())) {
                field_spans.push((k.clone(), s));
            }
            if k == "outputs" {
                continue;
            }
            match to_json_refs(fv, 0) {
                Ok(j) => {
                    map.insert(k, j);
                }
                Err(e) => diags.push(
                    Diagnostic::error(codes::NOT_EXPORTABLE, "a field cannot be exported")
                        .detail(format!("field `{k}`: {e}"))
                        .at(field_spans
                            .iter()
                            .rev()
                            .find(|(f, _)| *f == k)
                            .map(|(_, s)| *s)
                            .or(span)
                            .or(resources_span)
                            .and_then(|s| conv.sources.locate(s))),
                ),
            }
        }
        resources.push(RawResource {
            fields: map,
            span: span.or(resources_span),
            field_spans: field_spans.into(),
        });
    }
    let diags = diags.finish();
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Evaluated {
        stack: stack_name,
        stack_span,
        provider_settings,
        reconcile,
        resources,
        catalog,
        files_read: Vec::new(),
        modules,
        moved,
    })
}

/// The stack's `moved` entries with their spans. The `Moved` contract has checked their shape;
/// what still does not fit (a value the contract could not see) is E0120 where it was written.
fn walk_moved(
    v: &NickelValue,
    stack: &NickelValue,
    pos: &PosTable,
    conv: &mut SpanConv,
) -> Result<Vec<RawMove>, Vec<Diagnostic>> {
    let field_span = conv
        .user_span(pos.get(v.pos_idx()))
        .or_else(|| field_name_pos(stack, "moved").and_then(|p| conv.user_span(p)));
    let bad = |what: String, at: Option<Span>, conv: &SpanConv| {
        Diagnostic::error(codes::MOVED_INVALID, "invalid `moved` entry")
            .detail(format!(
                "{what}; write `moved = [{{ from = \"instance.web-0\", to = \"instance.front-0\" }}]`"
            ))
            .at(at.and_then(|s| conv.sources.locate(s)))
    };
    let Some(items) = array_items(v) else {
        return Err(vec![bad(
            format!("`moved` must be a list of entries, got {}", value_kind(v)),
            field_span,
            conv,
        )]);
    };
    let mut out = Vec::with_capacity(items.len());
    let mut diags = Vec::new();
    for item in items {
        let span = conv.user_span(pos.get(item.pos_idx())).or(field_span);
        let Some(fields) = record_fields(item) else {
            diags.push(bad(
                format!(
                    "an entry must be a record `{{ from, to }}`, got {}",
                    value_kind(item)
                ),
                span,
                conv,
            ));
            continue;
        };
        let mut entry = RawMove {
            from: None,
            to: None,
            span,
            from_span: None,
            to_span: None,
        };
        for (k, fv) in fields {
            let at = conv.user_span(pos.get(fv.pos_idx())).or(span);
            let text = fv.as_string().map(|s| s.to_string());
            match k.as_str() {
                "from" => (entry.from, entry.from_span) = (text, at),
                "to" => (entry.to, entry.to_span) = (text, at),
                _ => {}
            }
        }
        out.push(entry);
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nickel_string_escapes_interpolation_and_quotes() {
        assert_eq!(nickel_string(r#"/a/"b"/%{c}\"#), r#""/a/\"b\"/\%{c}\\""#);
    }
}
