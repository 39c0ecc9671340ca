//! A failed provider call, with its class kept: what failed, where, and what kind of failure
//! it is, so the CLI can show a coded diagnostic and the reconcile loop can decide to wait,
//! retry or escalate.

use chimera_model::{Address, Diagnostic, codes};
pub use chimera_providers::FailureClass;
use chimera_providers::ProviderError;

/// One failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    pub class: FailureClass,
    /// The resource the call was about; `None` for a listing.
    pub address: Option<Address>,
    /// The operation: `create`, `update`, `delete`, `read`, `list`.
    pub operation: &'static str,
    /// The cloud's error code when it gave one (`InvalidParameterValue`, …).
    pub code: Option<String>,
    pub message: String,
}

impl CallFailure {
    pub fn of(address: &Address, operation: &'static str, e: &ProviderError) -> Self {
        Self::from_error(Some(address.clone()), operation, e)
    }

    /// A failed listing of what a provider manages for a stack.
    pub fn listing(provider: chimera_model::ProviderName, e: &ProviderError) -> Self {
        let mut f = Self::from_error(None, "list", e);
        f.message = format!("listing {provider}: {}", f.message);
        f
    }

    fn from_error(address: Option<Address>, operation: &'static str, e: &ProviderError) -> Self {
        let (code, message) = match e {
            ProviderError::Retryable(m) => (None, m.clone()),
            ProviderError::Failed { code, message } => (Some(code.clone()), message.clone()),
        };
        CallFailure {
            class: e.class(),
            address,
            operation,
            code,
            message,
        }
    }

    /// A failure of Chimera's own making before any call (e.g. a reference with no value).
    pub fn permanent(address: &Address, operation: &'static str, message: String) -> Self {
        CallFailure {
            class: FailureClass::Permanent,
            address: Some(address.clone()),
            operation,
            code: None,
            message,
        }
    }

    /// The failure as a diagnostic with the code of its class.
    pub fn diagnostic(&self) -> Diagnostic {
        let (code, summary, advice) = match self.class {
            FailureClass::Throttled => (
                codes::CALL_THROTTLED,
                "the cloud throttled the call",
                "it was retried with backoff until the retries ran out; run the apply again later, or lower --parallelism",
            ),
            FailureClass::Retryable => (
                codes::CALL_TRANSIENT,
                "the call kept failing transiently",
                "it was retried with backoff until the retries ran out; run the apply again: it continues from where this one stopped",
            ),
            FailureClass::Conflict => (
                codes::CALL_CONFLICT,
                "the call conflicts with the resource's current state",
                "something else uses or changes this resource; check it in the cloud, then apply again",
            ),
            FailureClass::NotFound => (
                codes::CALL_NOT_FOUND,
                "the resource the call needs does not exist",
                "it was deleted outside Chimera; `chimera plan` refreshes and shows how to recreate it",
            ),
            FailureClass::Quota => (
                codes::CALL_QUOTA,
                "a quota or capacity limit stopped the call",
                "raise the quota, pick another size or region, or free capacity, then apply again",
            ),
            FailureClass::Permanent => (
                codes::CALL_REFUSED,
                "the cloud refused the call",
                "the request is invalid as written; fix the resource's configuration and plan again",
            ),
        };
        let cause = match &self.code {
            Some(c) => format!("{c}: {}", self.message),
            None => self.message.clone(),
        };
        let subject = match &self.address {
            Some(a) => a.to_string(),
            None => "the stack's resources".to_string(),
        };
        let d = Diagnostic::error(code, summary).detail(format!(
            "{} of {subject} failed ({}): {cause}; {advice}",
            self.operation,
            self.class.as_str()
        ));
        match &self.address {
            Some(a) => d.address(a),
            None => d,
        }
    }
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(c) => write!(f, "{c}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}
