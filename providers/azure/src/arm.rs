//! Azure Resource Manager over HTTP: a request with its bearer token and `api-version`, ARM's
//! error shape as provider errors, 429s waited out (`Retry-After`), and the long-running-operation
//! protocol: `Azure-AsyncOperation` when given, else `Location` (202 until done), else the
//! resource's own `provisioningState`; `Succeeded`, `Failed` and `Canceled` are terminal, a
//! missing state means succeeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use chimera_providers::{ProviderError, Result};

/// How long one long-running operation may take before it is reported as still running.
const MAX_OPERATION: Duration = Duration::from_secs(30 * 60);
/// The poll interval when ARM gives no `Retry-After`.
const DEFAULT_POLL: Duration = Duration::from_secs(2);
/// 429s waited out per request before the throttling is reported (retryable).
const MAX_THROTTLED: u32 = 8;

/// One ARM endpoint with its credential.
pub(super) struct Arm {
    pub(super) http: reqwest::Client,
    /// `https://management.azure.com`, without a trailing slash.
    pub(super) endpoint: String,
    pub(super) credential: Option<Arc<dyn TokenCredential>>,
    /// The token scope (`{endpoint}/.default` for the public cloud's ARM).
    pub(super) scope: String,
    /// The longest wait between polls and after a 429, whatever `Retry-After` says.
    pub(super) max_poll: Duration,
}

/// An answer: status, headers and JSON body (`Null` when empty).
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Value,
}

impl Arm {
    /// `path` (`/subscriptions/…`) or an absolute URL ARM gave (a poll URL), with `api_version`
    /// added when the URL has none.
    fn url(&self, path: &str, api_version: &str) -> String {
        let base = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.endpoint)
        };
        if base.contains("api-version=") {
            base
        } else if base.contains('?') {
            format!("{base}&api-version={api_version}")
        } else {
            format!("{base}?api-version={api_version}")
        }
    }

    async fn token(&self) -> Result<Option<String>> {
        let Some(c) = &self.credential else {
            return Ok(None);
        };
        let t = c
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|e| ProviderError::Failed {
                code: "AuthenticationFailed".into(),
                message: format!(
                    "cannot get an Azure token for {} ({e}); sign in with `az login`, set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or choose providers.azure.credential",
                    self.scope
                ),
            })?;
        Ok(Some(t.token.secret().to_string()))
    }

    /// One request, 429s waited out; an HTTP error status is an error (404 included).
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply> {
        let url = self.url(path, api_version);
        let mut throttled = 0;
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(t) = self.token().await? {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(e) = if_match {
                req = req.header("If-Match", e);
            }
            let resp = req.send().await.map_err(|e| transport(&url, e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.map_err(|e| transport(&url, e))?;
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            if status == StatusCode::TOO_MANY_REQUESTS && throttled < MAX_THROTTLED {
                throttled += 1;
                tokio::time::sleep(self.retry_after(&headers, Duration::from_secs(1))).await;
                continue;
            }
            if status.is_success() {
                return Ok(Reply {
                    status,
                    headers,
                    body,
                });
            }
            return Err(arm_error(status, &body, &method, path));
        }
    }

    /// How long ARM asks us to wait (`Retry-After` in seconds), capped by `max_poll`.
    fn retry_after(&self, headers: &HeaderMap, default: Duration) -> Duration {
        headers
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(default)
            .min(self.max_poll)
    }

    /// GET; `None` when ARM answers 404.
    pub(super) async fn get(&self, path: &str, api_version: &str) -> Result<Option<Value>> {
        match self.call(Method::GET, path, api_version, None, None).await {
            Ok(r) => Ok(Some(r.body)),
            Err(e) if e.class() == chimera_providers::FailureClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every item of a listing, following `nextLink`.
    pub(super) async fn list(&self, path: &str, api_version: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let r = self.call(Method::GET, &p, api_version, None, None).await?;
            if let Some(items) = r.body.get("value").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            next = r
                .body
                .get("nextLink")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        Ok(out)
    }

    /// A PUT or PATCH, waited for until its operation is done.
    pub(super) async fn write(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<()> {
        let r = self
            .call(method, path, api_version, Some(body), if_match)
            .await?;
        self.wait(&r, Some(path), api_version).await
    }

    /// A DELETE, waited for; deleting what is not there succeeds.
    pub(super) async fn delete(&self, path: &str, api_version: &str) -> Result<()> {
        match self
            .call(Method::DELETE, path, api_version, None, None)
            .await
        {
            Ok(r) => self.wait(&r, None, api_version).await,
            Err(e) if e.class() == chimera_providers::FailureClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A POST action (`…/deallocate`), waited for.
    pub(super) async fn action(&self, path: &str, api_version: &str) -> Result<()> {
        let r = self
            .call(
                Method::POST,
                path,
                api_version,
                Some(&Value::Object(Default::default())),
                None,
            )
            .await?;
        self.wait(&r, None, api_version).await
    }

    /// Waits for the operation `r` started: by its `Azure-AsyncOperation` status, else by its
    /// `Location` (202 until done), else (a PUT or PATCH of `resource`) by the resource's
    /// `provisioningState`.
    pub(super) async fn wait(
        &self,
        r: &Reply,
        resource: Option<&str>,
        api_version: &str,
    ) -> Result<()> {
        let started = Instant::now();
        let header = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let mut pause = self.retry_after(&r.headers, DEFAULT_POLL);
        if let Some(url) = header("Azure-AsyncOperation") {
            loop {
                tokio::time::sleep(pause).await;
                let p = self
                    .call(Method::GET, &url, api_version, None, None)
                    .await?;
                let status = p
                    .body
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("InProgress");
                if let Some(done) = terminal(status, &p.body, &url) {
                    return done;
                }
                self.overdue(started, &url)?;
                pause = self.retry_after(&p.headers, DEFAULT_POLL);
            }
        }
        if let Some(mut url) = header("Location").filter(|_| r.status == StatusCode::ACCEPTED) {
            loop {
                tokio::time::sleep(pause).await;
                let p = self
                    .call(Method::GET, &url, api_version, None, None)
                    .await?;
                if p.status != StatusCode::ACCEPTED {
                    return Ok(());
                }
                if let Some(next) = p.headers.get("Location").and_then(|v| v.to_str().ok()) {
                    url = next.to_string();
                }
                self.overdue(started, &url)?;
                pause = self.retry_after(&p.headers, DEFAULT_POLL);
            }
        }
        let Some(resource) = resource else {
            return Ok(());
        };
        let mut body = r.body.clone();
        loop {
            if let Some(done) = terminal(provisioning_state(&body), &body, resource) {
                return done;
            }
            tokio::time::sleep(pause).await;
            self.overdue(started, resource)?;
            body = self.get(resource, api_version).await?.ok_or_else(|| {
                ProviderError::Retryable(format!("{resource} is not visible yet"))
            })?;
        }
    }

    fn overdue(&self, started: Instant, what: &str) -> Result<()> {
        if started.elapsed() > MAX_OPERATION {
            return Err(ProviderError::Retryable(format!(
                "the operation on {what} is still running after {} minutes",
                MAX_OPERATION.as_secs() / 60
            )));
        }
        Ok(())
    }
}

/// A resource's `properties.provisioningState`; missing means `Succeeded`.
pub(super) fn provisioning_state(body: &Value) -> &str {
    body.pointer("/properties/provisioningState")
        .and_then(Value::as_str)
        .unwrap_or("Succeeded")
}

/// `Some` once `status` is terminal: `Succeeded`, or `Failed`/`Canceled` with the error ARM
/// reported.
fn terminal(status: &str, body: &Value, what: &str) -> Option<Result<()>> {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Some(Ok(())),
        "failed" | "canceled" | "cancelled" => {
            let e = body.get("error").cloned().unwrap_or_default();
            let code = e
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or(if status.eq_ignore_ascii_case("failed") {
                    "OperationFailed"
                } else {
                    "OperationCanceled"
                })
                .to_string();
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("the operation on {what} ended {status}"));
            Some(Err(classify(code, message)))
        }
        _ => None,
    }
}

/// ARM's error shape (`{"error": {"code", "message"}}`) as a provider error.
fn arm_error(status: StatusCode, body: &Value, method: &Method, path: &str) -> ProviderError {
    let e = body.get("error").cloned().unwrap_or_default();
    let code = e
        .get("code")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| match status {
            StatusCode::NOT_FOUND => "NotFound".into(),
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests".into(),
            s => format!("Http{}", s.as_u16()),
        });
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{method} {path} answered {status}"));
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return ProviderError::Retryable(format!("{code}: {message}"));
    }
    classify(code, message)
}

/// Codes worth retrying as they are (a conflicting operation still running, a resource group
/// still being deleted, a stale etag) are retryable; the rest are failures with ARM's code.
fn classify(code: String, message: String) -> ProviderError {
    const RETRYABLE: &[&str] = &[
        "AnotherOperationInProgress",
        "ResourceGroupBeingDeleted",
        "PreconditionFailed",
        "RetryableError",
        "TooManyRequests",
        "InternalServerError",
        "ServiceUnavailable",
        "GatewayTimeout",
    ];
    if RETRYABLE.contains(&code.as_str()) {
        ProviderError::Retryable(format!("{code}: {message}"))
    } else {
        ProviderError::Failed { code, message }
    }
}

fn transport(url: &str, e: reqwest::Error) -> ProviderError {
    // The URL without its query (nothing secret in it, but shorter).
    let url = url.split('?').next().unwrap_or(url);
    if e.is_timeout() {
        ProviderError::Retryable(format!("ARM timed out on {url}: {e}"))
    } else if e.is_connect() {
        ProviderError::Failed {
            code: "ConnectionError".into(),
            message: format!(
                "cannot reach Azure Resource Manager at {url} ({e}); check providers.azure.endpoint and the network"
            ),
        }
    } else {
        ProviderError::Retryable(format!("ARM request to {url} failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terminal_states_and_missing_means_succeeded() {
        assert!(terminal("InProgress", &Value::Null, "x").is_none());
        assert!(terminal("Updating", &Value::Null, "x").is_none());
        assert_eq!(terminal("Succeeded", &Value::Null, "x"), Some(Ok(())));
        let failed = json!({ "error": { "code": "SkuNotAvailable", "message": "no" } });
        assert_eq!(
            terminal("Failed", &failed, "x"),
            Some(Err(ProviderError::Failed {
                code: "SkuNotAvailable".into(),
                message: "no".into()
            }))
        );
        assert!(matches!(
            terminal("Canceled", &Value::Null, "x"),
            Some(Err(ProviderError::Failed { code, .. })) if code == "OperationCanceled"
        ));
        assert_eq!(
            provisioning_state(&json!({ "properties": {} })),
            "Succeeded"
        );
    }

    #[test]
    fn arm_errors_keep_their_code_and_retry_what_is_transient() {
        let body =
            json!({ "error": { "code": "InUseSubnetCannotBeDeleted", "message": "in use" } });
        let e = arm_error(StatusCode::BAD_REQUEST, &body, &Method::DELETE, "/s");
        assert_eq!(e.class(), chimera_providers::FailureClass::Conflict);
        let e = arm_error(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({ "error": { "code": "TooManyRequests", "message": "slow down" } }),
            &Method::GET,
            "/s",
        );
        assert_eq!(e.class(), chimera_providers::FailureClass::Throttled);
        let e = arm_error(StatusCode::NOT_FOUND, &Value::Null, &Method::GET, "/s");
        assert_eq!(e.class(), chimera_providers::FailureClass::NotFound);
        let e = arm_error(
            StatusCode::CONFLICT,
            &json!({ "error": { "code": "ResourceGroupBeingDeleted", "message": "wait" } }),
            &Method::PUT,
            "/s",
        );
        assert!(matches!(e, ProviderError::Retryable(_)));
    }
}
