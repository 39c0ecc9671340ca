//! One JSON POST to a model service: a timeout per request, bounded retries on 429 (honouring
//! `Retry-After`, capped) and 5xx (exponential backoff with jitter), and errors that say the
//! status and the start of the body, with the API key never in them.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::{LlmConfig, RetryPolicy};
use crate::AgentError;

/// How much of an error body goes into an error message, in characters.
const BODY_EXCERPT: usize = 500;

/// The placeholder for the API key wherever a service echoed it.
const REDACTED: &str = "[redacted]";

pub(crate) struct Http {
    client: reqwest::Client,
    retry: RetryPolicy,
    timeout: Duration,
    /// The API key, to scrub from whatever a service sends back.
    secret: Option<String>,
}

/// One failed attempt.
struct Failure {
    retryable: bool,
    retry_after: Option<Duration>,
    message: String,
}

impl Http {
    pub(crate) fn new(config: &LlmConfig) -> Result<Http, AgentError> {
        chimera_providers::install_tls_crypto();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| AgentError::Model(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            client,
            retry: config.retry,
            timeout: config.timeout,
            secret: config.api_key.clone().filter(|k| !k.is_empty()),
        })
    }

    /// A header carrying the API key, marked sensitive so that no debug output shows it.
    pub(crate) fn secret_header(
        name: &'static str,
        value: &str,
    ) -> Result<(HeaderName, HeaderValue), AgentError> {
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            AgentError::Model(format!(
                "the API key is not a valid {name} header value (it has control characters)"
            ))
        })?;
        v.set_sensitive(true);
        Ok((HeaderName::from_static(name), v))
    }

    /// POSTs `body` to `url` and returns the JSON answer.
    pub(crate) async fn post(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<Value, AgentError> {
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries)
            .with_jitter();
        let cap = self.retry.retry_after_cap;
        let mut attempts = 1;
        let out = (|| self.attempt(url, headers, body))
            .retry(policy)
            .when(|f: &Failure| f.retryable)
            .adjust(move |f, backoff| {
                // Exhausted stays exhausted; otherwise the server's word wins, within the cap.
                backoff.map(|d| f.retry_after.map_or(d, |ra| ra.min(cap)))
            })
            .notify(|f, wait| {
                attempts += 1;
                tracing::warn!(
                    url,
                    wait_ms = wait.as_millis() as u64,
                    "{}; retrying",
                    f.message
                );
            })
            .await;
        out.map_err(|f| {
            AgentError::Model(if attempts > 1 {
                format!("{} (gave up after {attempts} attempts)", f.message)
            } else {
                f.message
            })
        })
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<Value, Failure> {
        let resp = self
            .client
            .post(url)
            .headers(headers.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport_failure(url, &e))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let text = resp
            .text()
            .await
            .map_err(|e| self.transport_failure(url, &e))?;
        if !status.is_success() {
            return Err(Failure {
                retryable: status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
                retry_after,
                message: format!("POST {url}: HTTP {status}: {}", self.excerpt(&text)),
            });
        }
        serde_json::from_str(&text).map_err(|e| Failure {
            retryable: false,
            retry_after: None,
            message: format!(
                "POST {url}: HTTP {status} but the body is not JSON ({e}): {}",
                self.excerpt(&text)
            ),
        })
    }

    fn transport_failure(&self, url: &str, e: &reqwest::Error) -> Failure {
        if e.is_timeout() {
            return Failure {
                retryable: false,
                retry_after: None,
                message: format!("POST {url}: no answer within {:?}", self.timeout),
            };
        }
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        Failure {
            retryable: e.is_connect(),
            retry_after: None,
            message: self.redact(&format!("POST {url}: {chain}")),
        }
    }

    /// The first [`BODY_EXCERPT`] characters of a body, the key scrubbed.
    fn excerpt(&self, body: &str) -> String {
        let body = self.redact(body.trim());
        match body.char_indices().nth(BODY_EXCERPT) {
            Some((i, _)) => format!("{}…", &body[..i]),
            None if body.is_empty() => "(empty body)".into(),
            None => body,
        }
    }

    fn redact(&self, s: &str) -> String {
        match &self.secret {
            Some(k) => s.replace(k.as_str(), REDACTED),
            None => s.to_string(),
        }
    }
}

/// `retry-after-ms` (OpenAI) or `Retry-After` in seconds; an HTTP date is not honoured (the
/// backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let secs = get("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| get("retry-after"))?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}
