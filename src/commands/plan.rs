use std::path::{Path, PathBuf};

use chimera_compiler::cache::StateStamp;
use chimera_compiler::plan::{self, Plan, Prior};
use chimera_compiler::{markdown, render};
use chimera_model::hash::Hasher;
use chimera_model::{Diagnostic, SourceMap};
use clap::{Args, ValueEnum};
use serde_json::Value;

use super::ctx::{self, StateArgs};
use super::{Global, StackArg, compile_or_report};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    /// A pull-request comment (GitHub-flavoured, capped below GitHub's comment limit).
    Markdown,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub stack: StackArg,
    #[command(flatten)]
    pub state: StateArgs,
    /// Save the plan to FILE, for `chimera apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan the destruction of everything in the stack.
    #[arg(long)]
    pub destroy: bool,
}

/// A plan with where it was made: what `apply PLANFILE` needs besides the plan.
pub struct Planned {
    pub plan: Plan,
    pub state_url: String,
    pub local_cloud: String,
}

/// Compiles (unless destroying) and plans against current state.
pub async fn make_plan(
    global: &Global,
    path: &Path,
    state: &StateArgs,
    destroy: bool,
) -> Option<Planned> {
    make_plan_with(global, path, state, destroy, false).await
}

/// The state a memoized plan is valid for; `None` while anything is in flight or pending.
async fn state_stamp(
    store: &dyn chimera_state::StateStore,
    url: &str,
    stack: &str,
) -> Option<StateStamp> {
    let info = store.stack(stack).await.ok()?;
    let latest = match store.latest_generation(stack).await.ok()? {
        Some(g) if g.finished_at.is_none() => return None,
        Some(g) => format!("{} {}", g.status, g.finished_at.unwrap_or_default()),
        None => String::new(),
    };
    if !store.pending_intents(stack).await.ok()?.is_empty() {
        return None;
    }
    Some(StateStamp {
        url: url.to_string(),
        lineage: info.as_ref().map(|i| i.lineage.clone()),
        serial: info.map(|i| i.serial).unwrap_or(0),
        latest,
    })
}

/// As [`make_plan`]; with `memo`, an unchanged stack against unchanged state re-plans from the
/// evaluation cache's memo (no evaluation, no state rows read). Only for showing a plan: a
/// memoized plan holds no values to apply.
pub async fn make_plan_with(
    global: &Global,
    path: &Path,
    state: &StateArgs,
    destroy: bool,
    memo: bool,
) -> Option<Planned> {
    let url = ctx::state_url(state, path);
    let cache = super::eval_cache(global, path).filter(|_| memo && !destroy);
    let mut opened = None;
    if let Some(cache) = &cache
        && let Some(cached) = cache.peek(path)
    {
        let store = ctx::open_state(global, &url).await?;
        if let Some(stamp) = state_stamp(store.as_ref(), &url, &cached.stack).await
            && let Some(plan) = cache.memo(path, &cached, &stamp)
        {
            super::cache_trace("plan memo hit");
            return Some(Planned {
                plan,
                state_url: url,
                local_cloud: ctx::local_cloud_path(path).display().to_string(),
            });
        }
        opened = Some(store);
    }
    let compiled = compile_or_report(global, path)?;
    let graph = compiled.graph?;
    let store = match opened {
        Some(s) => s,
        None => ctx::open_state(global, &url).await?,
    };
    let stack = graph.stack.clone();
    let stamp = match &cache {
        Some(_) => state_stamp(store.as_ref(), &url, &stack).await,
        None => None,
    };
    let info = match store.stack(&stack).await {
        Ok(i) => i,
        Err(e) => {
            ctx::fail(global, ctx::state_diag(&e));
            return None;
        }
    };
    let current = match store.current(&stack).await {
        Ok(c) => c,
        Err(e) => {
            ctx::fail(global, ctx::state_diag(&e));
            return None;
        }
    };
    if let Ok(p) = store.pending_intents(&stack).await
        && !p.is_empty()
    {
        ui::emit_diagnostics(
            &[Diagnostic::warning("E0306", "an earlier apply was interrupted")
                .detail(format!("{} provider calls were in flight; `chimera apply` resolves them before it changes anything, and this plan may change once it has", p.len()))],
            &SourceMap::default(),
            global.error_format,
            global.color,
        );
    }
    let prior = Prior {
        lineage: info.as_ref().map(|i| i.lineage.clone()),
        serial: info.as_ref().map(|i| i.serial).unwrap_or(0),
        resources: &current,
    };
    let settings = graph.provider_settings.clone();
    // The graph moves into the plan: one copy of the desired state, not two.
    let planned = if destroy {
        plan::plan(None, &stack, &prior)
    } else {
        plan::plan_owned(graph, &prior)
    };
    match planned {
        Ok(mut plan) => {
            plan.provider_settings = settings;
            // The stamp was taken before the rows were read: if state moved in between, the
            // memo is keyed by the older stamp and is simply never found again.
            if let (Some(cache), Some(stamp)) = (&cache, &stamp) {
                cache.remember_noop(path, &plan, stamp);
            }
            Some(Planned {
                plan,
                state_url: url,
                local_cloud: ctx::local_cloud_path(path).display().to_string(),
            })
        }
        Err(diags) => {
            ui::emit_diagnostics(
                &diags,
                &SourceMap::default(),
                global.error_format,
                global.color,
            );
            None
        }
    }
}

/// 2: the plan digest is streamed (`Hasher::serialized`); version 1 files are refused, not misread.
pub const PLAN_FILE_VERSION: u64 = 2;

fn envelope_integrity(p: &Planned) -> String {
    let mut h = Hasher::new();
    h.part(b"chimera-plan-file-v1")
        .part(p.state_url.as_bytes())
        .part(p.local_cloud.as_bytes())
        .part(&p.plan.digest().0);
    h.finish().to_hex()
}

/// Writes a plan file atomically (temporary file, then rename).
pub fn write_plan_file(path: &Path, p: &Planned) -> Result<(), String> {
    let doc = serde_json::json!({
        "chimera_plan_file": PLAN_FILE_VERSION,
        "state_url": p.state_url,
        "local_cloud": p.local_cloud,
        "integrity": envelope_integrity(p),
        "plan": p.plan,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp-plan");
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// Reads and verifies a plan file.
pub fn read_plan_file(path: &Path) -> Result<Planned, Diagnostic> {
    let bad = |why: String| {
        Diagnostic::error("E0303", "invalid plan file").detail(format!(
            "`{}`: {why}; make a new one with `chimera plan --out FILE`",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "it is not a plan file (truncated or not JSON: {e})"
        ))
    })?;
    if doc.get("chimera_plan_file").and_then(Value::as_u64) != Some(PLAN_FILE_VERSION) {
        return Err(bad(
            "it is not a Chimera plan file of a version this build reads".into(),
        ));
    }
    let get = |k: &str| {
        doc.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("`{k}` is missing")))
    };
    let plan: Plan = serde_json::from_value(doc.get("plan").cloned().unwrap_or(Value::Null))
        .map_err(|e| bad(format!("its plan is malformed ({e})")))?;
    let p = Planned {
        plan,
        state_url: get("state_url")?,
        local_cloud: get("local_cloud")?,
    };
    if envelope_integrity(&p) != get("integrity")? {
        return Err(bad(
            "its integrity check failed: it was edited or damaged after it was written".into(),
        ));
    }
    Ok(p)
}

pub fn run(global: &Global, args: &PlanArgs) -> ExitStatus {
    let rt = ctx::runtime();
    let Some(planned) = rt.block_on(make_plan_with(
        global,
        &args.stack.path,
        &args.state,
        args.destroy,
        args.out.is_none(),
    )) else {
        return ExitStatus::Failure;
    };
    match args.format {
        PlanFormat::Text => {
            let color = ui::use_color(
                global.color,
                std::io::IsTerminal::is_terminal(&std::io::stdout()),
            );
            ui::print(&render::plan_text(&planned.plan, color));
        }
        PlanFormat::Json => {
            let mut s =
                serde_json::to_string_pretty(&render::plan_json(&planned.plan)).unwrap_or_default();
            s.push('\n');
            ui::print(&s);
        }
        PlanFormat::Markdown => {
            let opts = markdown::MarkdownOptions::for_plan(&planned.plan);
            ui::print(&markdown::plan_markdown(&planned.plan, &opts));
        }
    }
    if let Some(out) = &args.out {
        if let Err(m) = write_plan_file(out, &planned) {
            ctx::fail(
                global,
                Diagnostic::error("E0303", "cannot save the plan").detail(m),
            );
            return ExitStatus::Failure;
        }
        eprintln!(
            "Saved the plan to {}; apply exactly it with `chimera apply {}`.",
            out.display(),
            out.display()
        );
    }
    if args.detailed_exitcode && planned.plan.has_changes() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    }
}
