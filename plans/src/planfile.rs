//! Plan files: what `chimera plan --out FILE` saves and `chimera apply FILE` applies exactly.
//!
//! A JSON envelope around the plan with where it was made (the state URL and the local cloud),
//! and an integrity hash over all three, so an edited or damaged file is refused rather than
//! applied. Written atomically (a temporary file, then a rename).

use chimera_model::codes;
use std::path::Path;

use chimera_model::Diagnostic;
use chimera_model::hash::Hasher;
use serde_json::Value;

use crate::plan::Plan;

/// 2: the plan digest is streamed (`Hasher::serialized`); version 1 files are refused, not
/// misread.
pub const PLAN_FILE_VERSION: u64 = 2;

/// A plan with where it was made: what applying it needs besides the plan.
#[derive(Debug, Clone)]
pub struct PlanFile {
    pub plan: Plan,
    pub state_url: String,
    pub local_cloud: String,
    /// The policy directory the plan must pass when it is applied (the stack's `policies/`,
    /// whether or not it existed when the plan was made); empty: none.
    pub policies: String,
}

impl PlanFile {
    fn integrity(&self) -> String {
        let mut h = Hasher::new();
        h.part(b"chimera-plan-file-v1")
            .part(self.state_url.as_bytes())
            .part(self.local_cloud.as_bytes());
        if !self.policies.is_empty() {
            h.part(b"policies").part(self.policies.as_bytes());
        }
        h.part(&self.plan.digest().0);
        h.finish().to_hex()
    }

    /// Writes the plan file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let mut doc = serde_json::json!({
            "chimera_plan_file": PLAN_FILE_VERSION,
            "state_url": self.state_url,
            "local_cloud": self.local_cloud,
            "integrity": self.integrity(),
            "plan": self.plan,
        });
        if !self.policies.is_empty() {
            doc["policies"] = Value::String(self.policies.clone());
        }
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("tmp-plan");
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
    }

    /// Reads and verifies a plan file.
    pub fn read(path: &Path) -> Result<PlanFile, Box<Diagnostic>> {
        let bad = |why: String| {
            Box::new(
                Diagnostic::error(codes::INVALID_PLAN_FILE, "invalid plan file").detail(format!(
                    "`{}`: {why}; make a new one with `chimera plan --out FILE`",
                    path.display()
                )),
            )
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
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
        let file = PlanFile {
            plan,
            state_url: get("state_url")?,
            local_cloud: get("local_cloud")?,
            policies: doc
                .get("policies")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        if file.integrity() != get("integrity")? {
            return Err(bad(
                "its integrity check failed: it was edited or damaged after it was written".into(),
            ));
        }
        Ok(file)
    }
}
