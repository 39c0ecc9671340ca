//! GitHub's REST API (github.com, or GitHub Enterprise Server at `https://HOST/api/v3`).
//!
//! Opening is `POST /repos/{o}/{r}/pulls`; when GitHub answers 422 "A pull request already
//! exists", the open one is found (`GET …/pulls?head={o}:{branch}&base=…&state=open`) and its
//! title and body updated (`PATCH …/pulls/{n}`). Server errors and network failures are retried
//! with backoff (`backon`); rate limits (429, or 403 with `x-ratelimit-remaining: 0` or
//! `Retry-After`) wait as long as GitHub asks, up to [`RetryPolicy::max_wait`].

use std::error::Error as _;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use serde_json::{Value, json};

use super::{BODY_LIMIT, Forge, PrRequest, PrState, PullRequest, truncate_body};
use crate::AgentError;

/// The API of github.com.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The environment variable the token is read from.
pub const TOKEN_ENV: &str = "GITHUB_TOKEN";

/// The environment variable an API URL may come from when none is given (GitHub Actions sets
/// it, to the Enterprise API on GitHub Enterprise Server).
pub const API_URL_ENV: &str = "GITHUB_API_URL";

const API_VERSION: &str = "2022-11-28";
const USER_AGENT: &str = concat!("chimera-agents/", env!("CARGO_PKG_VERSION"));

/// How hard [`GitHub`] tries before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, for server errors, network failures and rate limits.
    pub retries: usize,
    /// The first backoff; it doubles, with jitter, up to `max_delay`.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The longest wait a rate limit may ask for (`Retry-After`, `x-ratelimit-reset`); one
    /// asking for longer fails at once, saying when to try again.
    pub max_wait: Duration,
    /// One request's timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 4,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            max_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Pull requests on GitHub.
#[derive(Clone)]
pub struct GitHub {
    http: reqwest::Client,
    /// Without a trailing `/`.
    api: String,
    owner: String,
    name: String,
    /// Kept only to rebuild the client when the policy changes; never displayed.
    token: HeaderValue,
    retry: RetryPolicy,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api", &self.api)
            .field("repo", &self.repo())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    /// A client for `repo` (`owner/name`) on github.com with `token`.
    pub fn new(repo: &str, token: &str) -> Result<GitHub, AgentError> {
        let (owner, name) = parse_repo(repo)?;
        let token = token.trim();
        if token.is_empty() {
            return Err(AgentError::Forge(format!(
                "the GitHub token is empty: {TOKEN_ENV} must hold a token that can push \
                 branches and open pull requests in {repo}"
            )));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            AgentError::Forge(format!(
                "the GitHub token holds characters a token cannot have (check {TOKEN_ENV})"
            ))
        })?;
        auth.set_sensitive(true);
        let retry = RetryPolicy::default();
        Ok(GitHub {
            http: client(&auth, &retry)?,
            api: DEFAULT_API_URL.into(),
            owner,
            name,
            token: auth,
            retry,
        })
    }

    /// A client configured from the environment, given as a lookup (`|k| std::env::var(k).ok()`
    /// in the CLI): the token from [`TOKEN_ENV`]; the API URL from `api_url` (`--forge-url`),
    /// else [`API_URL_ENV`], else [`DEFAULT_API_URL`].
    pub fn from_lookup(
        repo: &str,
        api_url: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<GitHub, AgentError> {
        let token = lookup(TOKEN_ENV)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                AgentError::Forge(format!(
                    "{TOKEN_ENV} is not set: opening pull requests in {repo} needs a token that \
                     can push branches and open pull requests there (or use --forge none to \
                     keep the branch local)"
                ))
            })?;
        let api = api_url
            .map(str::to_string)
            .or_else(|| lookup(API_URL_ENV).filter(|u| !u.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_API_URL.into());
        GitHub::new(repo, &token)?.with_api_url(&api)
    }

    /// Talks to another API: GitHub Enterprise Server (`https://HOST/api/v3`), or a test
    /// server. Plain `http` is refused except on loopback: the token would travel in clear.
    pub fn with_api_url(mut self, url: &str) -> Result<GitHub, AgentError> {
        let parsed = Url::parse(url.trim())
            .map_err(|e| AgentError::Forge(format!("the forge URL {url:?} is not a URL: {e}")))?;
        let loopback = matches!(
            parsed.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        );
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(AgentError::Forge(format!(
                    "refusing to send the GitHub token over plain http to {}: use https",
                    parsed.host_str().unwrap_or_default()
                )));
            }
            other => {
                return Err(AgentError::Forge(format!(
                    "the forge URL {url:?} has scheme {other:?}: use https://HOST (or \
                     https://HOST/api/v3 for GitHub Enterprise)"
                )));
            }
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(AgentError::Forge(
                "the forge URL must not carry credentials: the token comes from GITHUB_TOKEN"
                    .into(),
            ));
        }
        self.api = parsed.as_str().trim_end_matches('/').to_string();
        Ok(self)
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Result<GitHub, AgentError> {
        self.http = client(&self.token, &retry)?;
        self.retry = retry;
        Ok(self)
    }

    /// `owner/name`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    pub fn api_url(&self) -> &str {
        &self.api
    }

    fn pulls_path(&self) -> String {
        format!("/repos/{}/{}/pulls", self.owner, self.name)
    }

    fn repo_missing(&self) -> String {
        format!(
            "the repository {} does not exist on {}, or the token cannot see it",
            self.repo(),
            self.api
        )
    }

    fn pull_missing(&self, number: u64) -> String {
        format!(
            "pull request #{number} does not exist in {}, or the token cannot see the repository",
            self.repo()
        )
    }

    /// One API call with the retry policy; the JSON answer (`null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let policy = self.retry;
        let attempt = || self.attempt(method.clone(), path, query, body);
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(policy.min_delay)
                    .with_max_delay(policy.max_delay)
                    .with_max_times(policy.retries)
                    .with_jitter(),
            )
            .when(Failure::retryable)
            .adjust(move |failure, backoff| {
                let backoff = backoff?;
                match failure.wait() {
                    Some(wait) if wait > policy.max_wait => None,
                    Some(wait) => Some(wait),
                    None => Some(backoff),
                }
            })
            .await
    }

    async fn attempt(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let mut url = Url::parse(&format!("{}{path}", self.api))
            .map_err(|e| Failure::Network(format!("bad URL for {path}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Network(chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            let text = response
                .text()
                .await
                .map_err(|e| Failure::Network(chain(&e)))?;
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| Failure::Malformed(e.to_string()));
        }
        Err(Failure::from_response(status, response).await)
    }

    /// Turns a failure into the error the user reads: what was being done, what GitHub said,
    /// and what to do about it.
    fn explain(&self, failure: Failure, doing: &str, missing: &str) -> AgentError {
        let repo = self.repo();
        let attempts = self.retry.retries + 1;
        AgentError::Forge(match failure {
            Failure::Network(m) => format!(
                "cannot reach GitHub at {} while {doing} ({attempts} attempts): {m}",
                self.api
            ),
            Failure::Malformed(m) => {
                format!(
                    "GitHub's answer while {doing} is not what its API returns: {m} (is {} a GitHub API URL?)",
                    self.api
                )
            }
            Failure::Status {
                status,
                message,
                rate_limited: true,
                wait,
            } => match wait {
                Some(w) if w > self.retry.max_wait => format!(
                    "GitHub's rate limit stopped {doing} ({status}: {message}): it lifts in {} s, \
                     longer than Chimera waits ({} s); try again then",
                    w.as_secs(),
                    self.retry.max_wait.as_secs()
                ),
                _ => format!(
                    "GitHub's rate limit stopped {doing} ({status}: {message}) after \
                     {attempts} attempts; try again later"
                ),
            },
            Failure::Status {
                status, message, ..
            } => match status.as_u16() {
                401 => format!(
                    "GitHub rejected the token while {doing} ({status}: {message}): \
                     {TOKEN_ENV} is missing, expired or invalid"
                ),
                403 => format!(
                    "GitHub refused {doing} ({status}: {message}): the token lacks rights on \
                     {repo}; it needs read and write access to contents and pull requests \
                     (fine-grained token) or the repo scope (classic token)"
                ),
                404 => format!("{missing} ({status}: {message}) while {doing}"),
                422 => format!("GitHub rejected {doing} ({status}: {message})"),
                s if s >= 500 => format!(
                    "GitHub failed {doing} ({status}: {message}), {attempts} attempts; try \
                     again later"
                ),
                _ => format!("GitHub answered {status} while {doing}: {message}"),
            },
        })
    }
}

#[async_trait]
impl Forge for GitHub {
    async fn open_or_update(&self, pr: &PrRequest) -> Result<PullRequest, AgentError> {
        let body = truncate_body(&pr.body, BODY_LIMIT);
        let doing = format!(
            "opening a pull request from {} into {} in {}",
            pr.head,
            pr.base,
            self.repo()
        );
        let opened = self
            .call(
                Method::POST,
                &self.pulls_path(),
                &[],
                Some(&json!({
                    "title": pr.title,
                    "head": pr.head,
                    "base": pr.base,
                    "body": body,
                })),
            )
            .await;
        match opened {
            Ok(v) => return pull_request(&v, true, &doing),
            Err(f) if f.is_duplicate() => {}
            Err(f) => return Err(self.explain(f, &doing, &self.repo_missing())),
        }

        // One is open already for this head: find it and update it.
        let head = format!("{}:{}", self.owner, pr.head);
        let finding = format!("finding the open pull request from {head} into {}", pr.base);
        let list = self
            .call(
                Method::GET,
                &self.pulls_path(),
                &[
                    ("head", head.as_str()),
                    ("base", pr.base.as_str()),
                    ("state", "open"),
                ],
                None,
            )
            .await
            .map_err(|f| self.explain(f, &finding, &self.repo_missing()))?;
        let number = list
            .as_array()
            .and_then(|prs| prs.first())
            .and_then(|p| p["number"].as_u64())
            .ok_or_else(|| {
                AgentError::Forge(format!(
                    "GitHub says a pull request from {head} into {} already exists, but lists \
                     none open; try again",
                    pr.base
                ))
            })?;
        let doing = format!("updating pull request #{number} in {}", self.repo());
        let updated = self
            .call(
                Method::PATCH,
                &format!("{}/{number}", self.pulls_path()),
                &[],
                Some(&json!({ "title": pr.title, "body": body })),
            )
            .await
            .map_err(|f| self.explain(f, &doing, &self.pull_missing(number)))?;
        pull_request(&updated, false, &doing)
    }

    async fn comment(&self, number: u64, body: &str) -> Result<(), AgentError> {
        let body = truncate_body(body, BODY_LIMIT);
        let doing = format!("commenting on pull request #{number} in {}", self.repo());
        self.call(
            Method::POST,
            &format!(
                "/repos/{}/{}/issues/{number}/comments",
                self.owner, self.name
            ),
            &[],
            Some(&json!({ "body": body })),
        )
        .await
        .map_err(|f| self.explain(f, &doing, &self.pull_missing(number)))?;
        Ok(())
    }

    async fn state(&self, number: u64) -> Result<PrState, AgentError> {
        let doing = format!("reading pull request #{number} in {}", self.repo());
        let v = self
            .call(
                Method::GET,
                &format!("{}/{number}", self.pulls_path()),
                &[],
                None,
            )
            .await
            .map_err(|f| self.explain(f, &doing, &self.pull_missing(number)))?;
        if v["merged"].as_bool() == Some(true) {
            return Ok(PrState::Merged);
        }
        match v["state"].as_str() {
            Some("open") => Ok(PrState::Open),
            Some("closed") => Ok(PrState::Closed),
            other => Err(AgentError::Forge(format!(
                "GitHub's answer while {doing} has state {other:?}, neither open nor closed"
            ))),
        }
    }
}

/// Why one call failed.
#[derive(Debug)]
enum Failure {
    /// No answer: connection, TLS, timeout.
    Network(String),
    /// A 2xx whose body is not JSON.
    Malformed(String),
    Status {
        status: StatusCode,
        /// GitHub's `message`, with its `errors` (validation details).
        message: String,
        rate_limited: bool,
        /// How long GitHub asks to wait (`Retry-After`, else `x-ratelimit-reset` when the
        /// limit is used up).
        wait: Option<Duration>,
    },
}

impl Failure {
    async fn from_response(status: StatusCode, response: Response) -> Failure {
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let message = message_of(&text);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .map(str::to_string)
        };
        let exhausted = header("x-ratelimit-remaining").as_deref() == Some("0");
        let retry_after = header("retry-after").and_then(|s| s.parse::<u64>().ok());
        let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN
                && (exhausted
                    || retry_after.is_some()
                    || message.to_ascii_lowercase().contains("rate limit")));
        let wait = match retry_after {
            Some(secs) => Some(Duration::from_secs(secs)),
            None if exhausted => header("x-ratelimit-reset")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|reset| {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    Duration::from_secs(reset.saturating_sub(now))
                }),
            None => None,
        };
        Failure::Status {
            status,
            message,
            rate_limited: rate_limited && status.is_client_error(),
            wait,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Failure::Network(_) => true,
            Failure::Malformed(_) => false,
            Failure::Status {
                status,
                rate_limited,
                ..
            } => *rate_limited || status.is_server_error(),
        }
    }

    fn wait(&self) -> Option<Duration> {
        match self {
            Failure::Status {
                rate_limited: true,
                wait,
                ..
            } => *wait,
            _ => None,
        }
    }

    /// GitHub's 422 for a second pull request from the same head into the same base.
    fn is_duplicate(&self) -> bool {
        matches!(self, Failure::Status { status, message, .. }
            if *status == StatusCode::UNPROCESSABLE_ENTITY
                && message.contains("A pull request already exists"))
    }
}

/// GitHub's error message: `message`, and each of `errors` (`message`, or `resource field
/// code`), or the start of a non-JSON body.
fn message_of(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        let short: String = text.trim().chars().take(200).collect();
        return if short.is_empty() {
            "no message".into()
        } else {
            short
        };
    };
    let mut parts = Vec::new();
    if let Some(m) = v["message"].as_str() {
        parts.push(m.to_string());
    }
    let details: Vec<String> = v["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            _ => match e["message"].as_str() {
                Some(m) => m.to_string(),
                None => ["resource", "field", "code"]
                    .iter()
                    .filter_map(|k| e[*k].as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            },
        })
        .filter(|s| !s.is_empty())
        .collect();
    if !details.is_empty() {
        parts.push(details.join("; "));
    }
    if parts.is_empty() {
        "no message".into()
    } else {
        parts.join(": ")
    }
}

fn pull_request(v: &Value, created: bool, doing: &str) -> Result<PullRequest, AgentError> {
    match (v["number"].as_u64(), v["html_url"].as_str()) {
        (Some(number), Some(url)) => Ok(PullRequest {
            number,
            url: url.to_string(),
            created,
        }),
        _ => Err(AgentError::Forge(format!(
            "GitHub's answer while {doing} has no pull request number or html_url"
        ))),
    }
}

fn parse_repo(repo: &str) -> Result<(String, String), AgentError> {
    let valid = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.trim().split_once('/') {
        Some((owner, name)) if valid(owner) && valid(name) => {
            Ok((owner.to_string(), name.to_string()))
        }
        _ => Err(AgentError::Forge(format!(
            "{repo:?} is not a GitHub repository: write it owner/name (--repo acme/infra)"
        ))),
    }
}

fn client(auth: &HeaderValue, retry: &RetryPolicy) -> Result<reqwest::Client, AgentError> {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, auth.clone());
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        "x-github-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    chimera_providers::install_tls_crypto();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(headers)
        .timeout(retry.timeout)
        .connect_timeout(retry.timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| AgentError::Forge(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// An error and its causes, one after the other (reqwest's own message alone hides why).
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            message_of(
                r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for acme:x."}]}"#
            ),
            "Validation Failed: A pull request already exists for acme:x."
        );
        assert_eq!(
            message_of(
                r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","field":"head","code":"invalid"}]}"#
            ),
            "Validation Failed: PullRequest head invalid"
        );
        assert_eq!(
            message_of("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(message_of(""), "no message");
    }

    #[test]
    fn repos() {
        assert!(parse_repo("acme/infra").is_ok());
        for bad in ["acme", "acme/", "/infra", "a/b/c", "acme/in fra", "../x"] {
            assert!(parse_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        let gh = GitHub::new("acme/infra", "t").unwrap();
        assert!(
            gh.clone()
                .with_api_url("http://github.example.com")
                .is_err()
        );
        assert!(
            gh.clone()
                .with_api_url("https://user:pw@ghe.example.com")
                .is_err()
        );
        let ghe = gh
            .clone()
            .with_api_url("https://ghe.example.com/api/v3/")
            .unwrap();
        assert_eq!(ghe.api_url(), "https://ghe.example.com/api/v3");
        assert!(gh.with_api_url("http://127.0.0.1:8080").is_ok());
    }

    #[test]
    fn the_token_comes_from_the_lookup() {
        let err = GitHub::from_lookup("acme/infra", None, |_| None).unwrap_err();
        assert!(err.to_string().contains(TOKEN_ENV), "{err}");
        let gh = GitHub::from_lookup("acme/infra", None, |k| match k {
            TOKEN_ENV => Some("ghp_secret".into()),
            API_URL_ENV => Some("https://ghe.example.com/api/v3".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(gh.api_url(), "https://ghe.example.com/api/v3");
        assert!(!format!("{gh:?}").contains("ghp_secret"));
    }
}
