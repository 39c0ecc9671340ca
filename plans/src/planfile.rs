//! Plan files: what `chimera plan --out FILE` saves and `chimera apply FILE` applies exactly.
//!
//! A JSON envelope around the plan with where it was made (the state URL and the local cloud),
//! and an integrity hash over all three, so an edited or damaged file is refused rather than
//! applied. Written atomically (a temporary file, then a rename).
//!
//! A plan file holds the sensitive values it applies (`desired`), so with a key configured the
//! whole file is sealed (`chimera_seal`: AES-256-GCM, the key id in the envelope), and without
//! one a plan that holds a sensitive value is not saved at all: Chimera never writes a secret
//! in plaintext. A plan without sensitive values is written as JSON when no key is configured.

use chimera_model::codes;
use std::path::Path;

use chimera_model::Diagnostic;
use chimera_model::hash::Hasher;
use chimera_seal::{Keyring, Keys, purpose};
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

    /// Where the plan holds a sensitive value in plaintext: `(address, attribute)`.
    pub fn sensitive_values(&self) -> Vec<(String, String)> {
        self.plan
            .changes
            .iter()
            .filter_map(|c| Some((c, c.desired.as_ref()?)))
            .flat_map(|(c, d)| {
                d.sensitive
                    .iter()
                    .filter(|k| {
                        d.attrs
                            .get(*k)
                            .is_some_and(|v| !v.is_null() && v.get("$sensitive").is_none())
                    })
                    .map(|k| (c.address.to_string(), k.clone()))
            })
            .collect()
    }

    /// Writes the plan file atomically (temporary file, then rename): sealed with the key when
    /// one is configured; refused when it would hold a sensitive value and none is.
    pub fn write(&self, path: &Path, keys: &Keys) -> Result<(), Box<Diagnostic>> {
        let not_saved = |why: String| {
            Box::new(
                Diagnostic::error(codes::PLAN_NOT_SAVED, "cannot save the plan")
                    .detail(format!("`{}`: {why}", path.display())),
            )
        };
        let ring = keys.get()?;
        if ring.is_none() {
            let secrets = self.sensitive_values();
            if let Some((address, attr)) = secrets.first() {
                return Err(Box::new(
                    Diagnostic::error(codes::KEY_MISSING, "a plan file would hold a secret")
                        .detail(format!(
                            "the plan applies {} sensitive value{} (`{attr}` of {address}{}), and Chimera never writes one in plaintext: configure an encryption key (CHIMERA_KEY_FILE or --key-file, CHIMERA_KEY, CHIMERA_PASSPHRASE; docs/security.md) to save it sealed, or apply without saving (`chimera apply`)",
                            secrets.len(),
                            if secrets.len() == 1 { "" } else { "s" },
                            if secrets.len() > 1 { ", …" } else { "" },
                        ))
                        .address(address),
                ));
            }
        }
        let text = self.to_json().map_err(not_saved)?;
        let bytes = match ring {
            Some(ring) => ring
                .seal(purpose::PLAN_FILE, text.as_bytes())
                .map_err(|e| Box::new(e.diagnostic(&format!("plan file `{}`", path.display()))))?
                .into_bytes(),
            None => text.into_bytes(),
        };
        write_atomic(path, &bytes).map_err(not_saved)
    }

    fn to_json(&self) -> Result<String, String> {
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
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
    }

    /// Seals a plan file again with the keyring's key (rotation): `Ok(false)` when it is not
    /// sealed or sealed with that key already.
    pub fn reseal(path: &Path, ring: &Keyring) -> Result<bool, Box<Diagnostic>> {
        let what = format!("plan file `{}`", path.display());
        let bytes = std::fs::read(path).map_err(|e| {
            Box::new(
                Diagnostic::error(codes::INVALID_PLAN_FILE, "invalid plan file")
                    .detail(format!("{what}: cannot read it ({e})")),
            )
        })?;
        if !chimera_seal::is_sealed(&bytes) {
            return Ok(false);
        }
        match ring.reseal(purpose::PLAN_FILE, &bytes) {
            Ok(None) => Ok(false),
            Ok(Some(text)) => write_atomic(path, text.as_bytes())
                .map(|()| true)
                .map_err(|why| {
                    Box::new(
                        Diagnostic::error(codes::PLAN_NOT_SAVED, "cannot save the plan")
                            .detail(format!("{what}: {why}")),
                    )
                }),
            Err(e) => Err(Box::new(e.diagnostic(&what))),
        }
    }

    /// Reads and verifies a plan file (opening it with `keys` when it is sealed).
    pub fn read(path: &Path, keys: &Keys) -> Result<PlanFile, Box<Diagnostic>> {
        let bad = |why: String| {
            Box::new(
                Diagnostic::error(codes::INVALID_PLAN_FILE, "invalid plan file").detail(format!(
                    "`{}`: {why}; make a new one with `chimera plan --out FILE`",
                    path.display()
                )),
            )
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
        let opened;
        let bytes: &[u8] = if chimera_seal::is_sealed(&bytes) {
            if let Keys::Invalid(_) = keys {
                keys.get()?;
            }
            opened = keys
                .open(purpose::PLAN_FILE, &bytes)
                .map_err(|e| Box::new(e.diagnostic(&format!("plan file `{}`", path.display()))))?;
            &opened.plaintext
        } else {
            &bytes
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            bad(format!(
                "it is not UTF-8 text (at byte {})",
                e.valid_up_to()
            ))
        })?;
        let doc: Value = serde_json::from_str(text).map_err(|e| {
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

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp-plan");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write `{}`: {e}", path.display())
    })
}
