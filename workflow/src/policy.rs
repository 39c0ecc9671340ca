//! Policies: the stack's `policies/` (Rego and Nickel) evaluated over the plan JSON. `plan`
//! shows what they find; every apply — of a stack or a saved plan — refuses on a `deny`
//! before anything is changed; a `warn` is shown and does not block.

use std::path::{Path, PathBuf};

use chimera_model::{Diagnostic, SourceMap, codes};
use chimera_plans::findings::{Finding, Level};
use chimera_plans::plan::Plan;
use chimera_plans::render;
use chimera_policy::PolicyOptions;

use crate::error::{Error, ErrorKind};
use crate::stack::Stack;

/// The policy directory of a stack directory.
pub fn policy_dir(stack_dir: &Path) -> PathBuf {
    stack_dir.join("policies")
}

/// Evaluates the policies in `dir` (none when it does not exist) over `plan`.
pub fn evaluate(dir: &Path, plan: &Plan, opts: &PolicyOptions) -> Result<Vec<Finding>, Error> {
    let broken = |d: Vec<Diagnostic>| Error::many(ErrorKind::Policy, d, SourceMap::default());
    let policies = chimera_policy::load(dir, opts).map_err(broken)?;
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    policies.evaluate(&render::plan_json(plan)).map_err(broken)
}

/// The refusal of a plan some policy denies: one diagnostic per deny, naming the policy file
/// and line, the rule, the address and the message.
pub fn refusal(findings: &[Finding]) -> Option<Error> {
    let denies: Vec<Diagnostic> = findings
        .iter()
        .filter(|f| f.level == Level::Deny)
        .map(|f| {
            let mut d = Diagnostic::error(codes::POLICY_DENIED, "a policy denies this plan")
                .detail(format!(
                    "{}: {} (rule `{}` in {}); fix the stack so the rule passes, or change the policy in a reviewed change",
                    f.address.as_deref().unwrap_or("the plan"),
                    f.message,
                    f.rule,
                    f.location()
                ));
            if let Some(a) = &f.address {
                d = d.address(a);
            }
            d
        })
        .collect();
    if denies.is_empty() {
        return None;
    }
    let n = denies.len();
    Some(
        Error::many(ErrorKind::Policy, denies, SourceMap::default()).hint(format!(
            "{n} policy violation{} must be fixed before this plan can be applied; nothing was changed",
            if n == 1 { "" } else { "s" }
        )),
    )
}

/// A policy warning as a diagnostic (shown, never blocking).
pub fn warning(f: &Finding) -> Diagnostic {
    let mut d = Diagnostic::warning(codes::POLICY_WARNED, "a policy warns about this plan").detail(
        format!(
            "{}: {} (rule `{}` in {})",
            f.address.as_deref().unwrap_or("the plan"),
            f.message,
            f.rule,
            f.location()
        ),
    );
    if let Some(a) = &f.address {
        d = d.address(a);
    }
    d
}

impl Stack {
    /// The stack's policy directory (`policies/` beside its main file).
    pub fn policy_dir(&self) -> PathBuf {
        policy_dir(self.dir())
    }

    /// What the stack's policies find in `plan`.
    pub fn check_policies(&self, plan: &Plan) -> Result<Vec<Finding>, Error> {
        evaluate(&self.policy_dir(), plan, &self.settings.policy)
    }
}

/// `chimera policy test`: the policy unit tests in `dir` (Rego `test_*` rules and Nickel
/// `*_test.ncl` cases), as `opa test` runs them.
pub fn test(dir: &Path, opts: &PolicyOptions) -> Result<chimera_policy::TestReport, Error> {
    chimera_policy::run_tests(dir, opts)
        .map_err(|d| Error::many(ErrorKind::Policy, d, SourceMap::default()))
}
