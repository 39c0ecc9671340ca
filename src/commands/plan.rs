use std::path::PathBuf;

use chimera_plans::findings::{self, Finding};
use chimera_plans::{markdown, render};
use chimera_workflow::{PlanOptions, Planned};
use clap::{Args, ValueEnum};

use super::ctx::{self, StateArgs};
use super::{Global, StackArg, finish, open};
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
    /// Read every resource from its cloud before planning, as `terraform plan` does
    /// (`--refresh=false` plans against state as recorded).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub refresh: bool,
    /// Plan the destruction of everything in the stack.
    #[arg(long)]
    pub destroy: bool,
}

/// A plan rendered in `format`, with what the policies found.
pub fn render_plan(
    global: &Global,
    planned: &Planned,
    format: PlanFormat,
    found: &[Finding],
) -> String {
    match (format, planned) {
        (PlanFormat::Text, Planned::Full(f)) => {
            let mut s = render::plan_text(&f.plan, stdout_color(global));
            if !found.is_empty() {
                s.push('\n');
                s.push_str(&findings::findings_text(found));
            }
            s
        }
        (PlanFormat::Text, Planned::Unchanged(n)) => render::noop_text(n),
        (PlanFormat::Json, _) => {
            let mut doc = match planned {
                Planned::Full(f) => render::plan_json(&f.plan),
                Planned::Unchanged(n) => render::noop_json(n),
            };
            let (deny, warn) = findings::counts(found);
            doc["policy"] = serde_json::json!({
                "denied": deny,
                "warnings": warn,
                "findings": found,
            });
            let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
            s.push('\n');
            s
        }
        (PlanFormat::Markdown, Planned::Full(f)) => {
            let mut opts = markdown::MarkdownOptions::for_plan(&f.plan);
            opts.findings = found.to_vec();
            markdown::plan_markdown(&f.plan, &opts)
        }
        (PlanFormat::Markdown, Planned::Unchanged(n)) => markdown::noop_markdown(
            n,
            &markdown::MarkdownOptions::for_stack(&n.stack, n.prior_serial),
        ),
    }
}

pub fn stdout_color(global: &Global) -> bool {
    ui::use_color(
        global.color,
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
    )
}

pub fn run(global: &Global, args: &PlanArgs) -> ExitStatus {
    let mut stack = open(global, &args.stack.path, Some(&args.state));
    let opts = PlanOptions {
        destroy: args.destroy,
        memo: args.out.is_none(),
        refresh: args.refresh,
    };
    let r = ctx::runtime().block_on(stack.plan(opts));
    let Some(planned) = finish(global, &mut stack, r) else {
        return ExitStatus::Failure;
    };
    if let Planned::Unchanged(_) = &planned {
        ctx::trace("cache: plan memo hit");
    }
    // Policies judge what would change; an unchanged stack has nothing to judge.
    let found = match &planned {
        Planned::Full(f) if f.plan.has_changes() => match stack.check_policies(&f.plan) {
            Ok(found) => found,
            Err(e) => {
                ctx::report(global, Some(&mut stack), &e);
                return ExitStatus::Failure;
            }
        },
        _ => Vec::new(),
    };
    ui::print(&render_plan(global, &planned, args.format, &found));
    if let Some(out) = &args.out {
        // A plan made for --out is never a memo (`memo: false` above).
        let written = match &planned {
            Planned::Full(file) => chimera_workflow::write_plan_file(
                out,
                file,
                &ctx::settings(global, Some(&args.state)),
            ),
            Planned::Unchanged(_) => Err(chimera_workflow::Error::new(
                chimera_workflow::ErrorKind::Io,
                chimera_model::Diagnostic::error(
                    chimera_model::codes::INTERNAL,
                    "a memoized plan cannot be saved",
                )
                .detail("run `chimera plan --no-cache --out FILE`; this is a bug in Chimera, please report it"),
            )),
        };
        if let Err(e) = written {
            ctx::report(global, None, &e);
            return ExitStatus::Failure;
        }
        eprintln!(
            "Saved the plan to {}; apply exactly it with `chimera apply {}`.",
            out.display(),
            out.display()
        );
    }
    let (denied, _) = findings::counts(&found);
    if denied > 0 {
        eprintln!(
            "{denied} policy violation{} (listed above): `chimera apply` will refuse this plan.",
            if denied == 1 { "" } else { "s" }
        );
        ExitStatus::Failure
    } else if args.detailed_exitcode && planned.has_changes() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    }
}
