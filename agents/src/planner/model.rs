//! The stack as the planner sees it: its files in memory, evaluated (every resource with its
//! fields and where each was written) and priced, without touching the disk. Every candidate
//! edit is judged by evaluating the edited files again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chimera_compiler::source::{Overlay, Source};
use chimera_compiler::{EvalOptions, eval};
use serde_json::{Map, Value};

use super::syntax::{Span, Tree};

/// Where the planner's in-memory stack lives: no file is read from there.
const ROOT: &str = "/chimera-offline-planner/stack";

/// A place in one of the stack's files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub file: PathBuf,
    pub span: Span,
}

/// One evaluated resource.
#[derive(Debug, Clone)]
pub struct Res {
    pub kind: String,
    pub name: String,
    pub fields: Map<String, Value>,
    /// The resource value (a record, or the merge that built it), when written in the stack.
    pub span: Option<Loc>,
    /// Where each field's value was written, for fields written in the stack's own files.
    pub field_spans: BTreeMap<String, Loc>,
    /// The provider after `'cheapest` placed it (when the stack lowered).
    pub provider: Option<String>,
}

impl Res {
    pub fn address(&self) -> String {
        format!("{}.{}", self.kind, self.name)
    }

    pub fn str_field(&self, f: &str) -> Option<&str> {
        self.fields.get(f).and_then(Value::as_str)
    }
}

/// The stack evaluated.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub resources: Vec<Res>,
    /// The monthly list price of the whole stack (USD), when it lowered.
    pub monthly: Option<f64>,
    /// The catalog's abstract regions.
    pub regions: Vec<String>,
}

/// The stack's files, as given.
#[derive(Debug, Clone)]
pub struct Files {
    pub texts: BTreeMap<PathBuf, String>,
    trees: BTreeMap<PathBuf, Arc<Tree>>,
}

impl Files {
    pub fn new(texts: BTreeMap<PathBuf, String>) -> Result<Files, String> {
        let mut trees = BTreeMap::new();
        for (p, t) in &texts {
            if p.extension().and_then(|e| e.to_str()) == Some("ncl") {
                trees.insert(
                    p.clone(),
                    Arc::new(Tree::parse(&p.display().to_string(), t)?),
                );
            }
        }
        Ok(Files { texts, trees })
    }

    pub fn tree(&self, file: &Path) -> Option<&Tree> {
        self.trees.get(file).map(|t| t.as_ref())
    }

    /// The entry file: `main.ncl`, else the only Nickel file.
    fn entry(&self) -> Option<PathBuf> {
        let main = PathBuf::from("main.ncl");
        if self.texts.contains_key(&main) {
            return Some(main);
        }
        let mut ncl = self
            .texts
            .keys()
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("ncl"));
        match (ncl.next(), ncl.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }

    /// Evaluates the files with `changed` in place of theirs.
    pub fn evaluate(&self, changed: &BTreeMap<PathBuf, String>) -> Result<Snapshot, String> {
        let entry = self
            .entry()
            .ok_or("the stack has no main.ncl among the files given to the planner")?;
        let files = self
            .texts
            .iter()
            .map(|(p, t)| (p.clone(), changed.get(p).unwrap_or(t).clone()));
        let source: Arc<dyn Source> = Arc::new(Overlay::new(ROOT, files));
        let root = Path::new(ROOT);
        let out = eval::evaluate(&source, &root.join(&entry), &EvalOptions::default());
        let ev = match out.result {
            Ok(ev) => ev,
            Err(ds) => {
                let first = ds
                    .first()
                    .map(|d| format!("{}: {}", d.summary, d.detail))
                    .unwrap_or_default();
                return Err(format!("the stack does not evaluate: {first}"));
            }
        };
        let loc = |s: chimera_model::Span| -> Option<Loc> {
            let name = &out.sources.get(s.file)?.name;
            let p = Path::new(name);
            let rel = p.strip_prefix(root).unwrap_or(p).to_path_buf();
            self.texts.contains_key(&rel).then_some(Loc {
                file: rel,
                span: (s.start as usize, s.end as usize),
            })
        };
        let mut resources: Vec<Res> = ev
            .resources
            .iter()
            .map(|r| Res {
                kind: r
                    .fields
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: r
                    .fields
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                fields: r.fields.clone(),
                span: r.span.and_then(loc),
                field_spans: r
                    .field_spans
                    .iter()
                    .filter_map(|(f, s)| Some((f.clone(), loc(*s)?)))
                    .collect(),
                provider: None,
            })
            .collect();
        let regions = ev
            .catalog
            .get("regions")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let mut diagnostics = Vec::new();
        let graph = chimera_compiler::lower_evaluated(ev, &out.sources, &mut diagnostics);
        let monthly = graph.as_ref().map(|g| {
            for r in resources.iter_mut() {
                if let Some(gr) = g
                    .resources
                    .iter()
                    .find(|x| x.address.kind.as_str() == r.kind && x.address.name == r.name)
                {
                    r.provider = Some(gr.provider.as_str().to_string());
                }
            }
            chimera_plans::cost::graph_cost(g).monthly_after
        });
        Ok(Snapshot {
            resources,
            monthly,
            regions,
        })
    }
}

/// Whether the resource `name` belongs to tier `tier`: the name itself, or the name with an
/// index (`web-0`), or a name whose `-`-separated words contain the tier's (`shop-prod-web`
/// is in `web` and in `prod`).
pub fn in_tier(name: &str, tier: &str) -> bool {
    let name = name.to_lowercase();
    let tier = tier.to_lowercase();
    if name == tier {
        return true;
    }
    let words: Vec<&str> = name.split(['-', '_', '.']).collect();
    let want: Vec<&str> = tier.split(['-', '_', '.']).collect();
    words.windows(want.len()).any(|w| w == want.as_slice())
}

impl Snapshot {
    /// The resources of tier `tier` (of `kind`, when given), in evaluation order.
    pub fn tier(&self, tier: &str, kind: Option<&str>) -> Vec<usize> {
        let of_kind = |r: &Res| kind.is_none_or(|k| r.kind == k);
        let exact: Vec<usize> = (0..self.resources.len())
            .filter(|&i| of_kind(&self.resources[i]) && self.resources[i].name == tier)
            .collect();
        if !exact.is_empty() && !tier.is_empty() {
            // An exact name is one resource (`web-0`), unless an index would add more.
            let more: Vec<usize> = (0..self.resources.len())
                .filter(|&i| of_kind(&self.resources[i]) && in_tier(&self.resources[i].name, tier))
                .collect();
            if more.len() > exact.len()
                && more.iter().all(|&i| {
                    indexed(&self.resources[i].name, tier) || self.resources[i].name == tier
                })
            {
                return more;
            }
            return exact;
        }
        (0..self.resources.len())
            .filter(|&i| of_kind(&self.resources[i]) && in_tier(&self.resources[i].name, tier))
            .collect()
    }

    pub fn find(&self, kind: &str, name: &str) -> Option<&Res> {
        self.resources
            .iter()
            .find(|r| r.kind == kind && r.name == name)
    }
}

/// `web-0` for tier `web`.
fn indexed(name: &str, tier: &str) -> bool {
    name.strip_prefix(tier)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
}
