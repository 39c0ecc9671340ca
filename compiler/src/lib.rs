//! Chimera's compiler: Nickel stack files → a typed, content-addressed resource graph.
//!
//! `compile` = [`eval::evaluate`] (Nickel, in a worker thread, under limits) → [`lower`]
//! (validate and type each resource, resolve the catalog and `'cheapest`) → [`graph::build`]
//! (edges, cycles, hashes). Pure: the same inputs give byte-identical output.

pub mod cache;
pub mod catalog;
pub mod eval;
pub mod graph;
pub mod lower;
pub mod moved;
pub mod prices;
pub mod source;
pub mod stdlib;

use chimera_model::codes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chimera_model::diagnostic as diagnostics;
use chimera_model::{Diagnostic, SourceMap};

pub use eval::EvalOptions;
pub use graph::{Graph, Resource};
pub use source::{Disk, GitTree, Overlay, Source};

/// The result of compiling a stack: a graph, or diagnostics, and the sources they point into.
pub struct Compiled {
    pub graph: Option<Graph>,
    pub diagnostics: Vec<Diagnostic>,
    pub sources: SourceMap,
    /// User files evaluation read, for cache keys.
    pub files_read: Vec<PathBuf>,
}

impl Compiled {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Compiles the stack at `path` (a directory with `main.ncl`, or a file) on disk.
pub fn compile(path: &Path, opts: &EvalOptions) -> Compiled {
    compile_from(&(Arc::new(Disk::new()) as Arc<dyn Source>), path, opts)
}

/// Compiles the stack at `path` in `source` (a directory with `main.ncl`, or a file).
///
/// Identical diagnostics are folded (the first few in full, then "and N more like this"), and
/// every diagnostic has a location: one Chimera cannot place better points at the stack file.
pub fn compile_from(source: &Arc<dyn Source>, path: &Path, opts: &EvalOptions) -> Compiled {
    let entry = source::entry(source.as_ref(), path);
    let (evaluated, sources) = evaluate_stack(source, path, opts);
    let evaluated = match evaluated {
        Ok(e) => e,
        Err(diagnostics) => {
            return Compiled {
                graph: None,
                diagnostics: located(source.as_ref(), &entry, diagnostics::fold(diagnostics)),
                sources,
                files_read: Vec::new(),
            };
        }
    };
    let mut diagnostics = Vec::new();
    let files_read = evaluated.files_read.clone();
    let graph = lower_evaluated(evaluated, &sources, &mut diagnostics);
    Compiled {
        graph,
        diagnostics: located(source.as_ref(), &entry, diagnostics),
        sources,
        files_read,
    }
}

/// Gives a diagnostic without a location the stack file's first line, so none is unplaced.
fn located(source: &dyn Source, entry: &Path, diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics
        .into_iter()
        .map(|d| {
            if d.location.is_some() {
                return d;
            }
            let file = source.display(&source.absolute(entry).to_string_lossy());
            d.at(Some(chimera_model::Location {
                file,
                line: 1,
                column: 1,
                end_line: 1,
                end_column: 1,
                span: None,
            }))
        })
        .collect()
}

/// Evaluates the stack at `path` and its modules: every resource with its spans, and the
/// sources they point into.
fn evaluate_stack(
    source: &Arc<dyn Source>,
    path: &Path,
    opts: &EvalOptions,
) -> (Result<eval::Evaluated, Vec<Diagnostic>>, SourceMap) {
    let file = source::entry(source.as_ref(), path);
    let out = eval::evaluate(source, &file, opts);
    let mut sources = out.sources;
    let mut evaluated = match out.result {
        Ok(e) => e,
        Err(diagnostics) => return (Err(diagnostics), sources),
    };
    if !evaluated.modules.is_empty() {
        let dir = file.parent().unwrap_or(Path::new("."));
        let paths: Vec<PathBuf> = evaluated.modules.iter().map(|m| dir.join(m)).collect();
        let mut diagnostics = Vec::new();
        for out in eval::evaluate_modules(source, &paths, opts) {
            let offset = sources.append(out.sources);
            match out.result {
                Ok(m) => {
                    evaluated
                        .resources
                        .extend(m.resources.into_iter().map(|r| r.shift_files(offset)));
                    evaluated
                        .moved
                        .extend(m.moved.into_iter().map(|r| r.shift_files(offset)));
                    evaluated.files_read.extend(m.files_read);
                }
                Err(ds) => diagnostics.extend(ds.into_iter().map(|d| d.shift_files(offset))),
            }
        }
        if !diagnostics.is_empty() {
            return (Err(diagnostics), sources);
        }
        evaluated.files_read.sort();
        evaluated.files_read.dedup();
    }
    (Ok(evaluated), sources)
}

/// Where each `(address, field)` of the stack was written (the field, else the resource's
/// name, else the resource), and the sources the locations point into. Evaluates the stack
/// again: for diagnostics found after compiling (a provider's limits at plan time), whose
/// graph carries no spans.
pub fn locate(
    source: &Arc<dyn Source>,
    path: &Path,
    opts: &EvalOptions,
    wanted: &[(chimera_model::Address, String)],
) -> (Vec<Option<chimera_model::Location>>, SourceMap) {
    let (evaluated, sources) = evaluate_stack(source, path, opts);
    let Ok(evaluated) = evaluated else {
        return (vec![None; wanted.len()], sources);
    };
    let is = |r: &eval::RawResource, a: &chimera_model::Address| {
        let field = |k: &str| r.fields.get(k).and_then(serde_json::Value::as_str);
        field("kind") == Some(a.kind.as_str()) && field("name") == Some(a.name.as_str())
    };
    let found = wanted
        .iter()
        .map(|(address, field)| {
            let raw = evaluated.resources.iter().find(|r| is(r, address))?;
            let span = raw
                .field_span(field)
                .or(raw.field_span("name"))
                .or(raw.span)?;
            sources.locate(span)
        })
        .collect();
    (found, sources)
}

/// Lowers an evaluation into a graph, appending diagnostics. Consumes the evaluation so each
/// resource's JSON is freed as soon as it is lowered.
pub fn lower_evaluated(
    ev: eval::Evaluated,
    sources: &SourceMap,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Graph> {
    let catalog = match <catalog::Catalog as serde::Deserialize>::deserialize(&ev.catalog) {
        Ok(c) => c,
        Err(e) => {
            diagnostics.push(
                Diagnostic::error(codes::INTERNAL, "the catalog is malformed").detail(format!(
                    "the stdlib catalog does not have the expected shape: {e}"
                )),
            );
            return None;
        }
    };
    // Per-resource diagnostics are folded as they arrive: a mistake repeated in a generated
    // fleet is a few diagnostics, never millions held in memory.
    let mut folder = diagnostics::Folder::default();
    folder.extend(diagnostics.drain(..));
    let mut one = Vec::new();
    let headers: Vec<Option<lower::Header>> = ev
        .resources
        .iter()
        .map(|r| {
            let h = lower::header(r, sources, &mut one);
            folder.extend(one.drain(..));
            h
        })
        .collect();
    let (providers, placements) =
        lower::resolve_placements(&ev.resources, &headers, &catalog, sources, &mut one);
    folder.extend(one.drain(..));
    let mut lowered = Vec::with_capacity(ev.resources.len());
    for ((raw, header), provider) in ev.resources.into_iter().zip(&headers).zip(providers) {
        if let (Some(h), Some(p)) = (header, provider)
            && let Some(l) = lower::lower_one(&raw, h, p, &catalog, sources, &mut one)
        {
            lowered.push(l);
        }
        folder.extend(one.drain(..));
    }
    // Relation problems among what did lower are reported even when some resources failed.
    lower::check_relations(&lowered, sources, &mut one);
    folder.extend(one.drain(..));
    *diagnostics = folder.finish();
    if diagnostics.iter().any(Diagnostic::is_error) {
        return None;
    }
    let graph = graph::build(&ev.stack, lowered, sources, &mut one).map(|mut g| {
        g.provider_settings = ev.provider_settings.clone();
        g.reconcile = ev.reconcile.clone();
        g.placements = placements;
        if !ev.moved.is_empty() {
            g.moved = moved::lower(&ev.moved, &g, sources, &mut one);
            g.hash = moved::graph_hash(g.hash, &g.moved);
        }
        g
    });
    diagnostics.extend(diagnostics::fold(one));
    if diagnostics.iter().any(Diagnostic::is_error) {
        return None;
    }
    graph
}
