//! A fake GitHub on 127.0.0.1 for the agents' forge tests: the REST routes Chimera uses, backed
//! by a real bare git repository the agent pushes to.
//!
//! Routes (all under `/repos/{OWNER}/{REPO}`, or `/api/v3/repos/…` as on GitHub Enterprise
//! Server; anything else is 404 `Not Found`):
//!
//! - `POST /pulls` `{title, head, base, body}` → 201; 422 when `head` or `base` is not a branch
//!   of the bare repository, when they are at the same commit ("No commits between"), and when
//!   an open pull request from that head into that base exists (GitHub's exact "A pull request
//!   already exists for owner:branch." error).
//! - `GET /pulls?head=owner:branch&base=…&state=open|closed|all` → the matching list.
//! - `GET /pulls/{n}` → the pull request with `state` and `merged`.
//! - `PATCH /pulls/{n}` `{title?, body?, base?, state?}` → 200.
//! - `POST /issues/{n}/comments` `{body}` → 201.
//!
//! Stricter than GitHub where it costs nothing: every request needs `Authorization: Bearer
//! {TOKEN}` (401 `Bad credentials` otherwise), a `User-Agent` (403, as GitHub) and
//! `X-GitHub-Api-Version: 2022-11-28` when the header is present with another value (400);
//! bodies and comments over 65,536 characters get 422. [`FakeForge::fail_next`] makes the next
//! requests fail with a status of the test's choosing.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The repository the fake serves: `OWNER/REPO`.
pub const OWNER: &str = "acme";
pub const REPO: &str = "infra";

/// The only token the fake accepts.
pub const TOKEN: &str = "fake-forge-token-7f3a";

/// GitHub's limit on pull request bodies and comments, in characters.
pub const BODY_LIMIT: usize = 65_536;

/// Where a fake pull request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeState {
    Open,
    Closed,
    Merged,
}

/// A pull request as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePull {
    pub number: u64,
    /// The branch name, without `owner:`.
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub state: FakeState,
}

/// A comment on a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeComment {
    pub number: u64,
    pub body: String,
}

#[derive(Debug)]
struct Failure {
    status: u16,
    left: usize,
    retry_after: Option<u64>,
}

#[derive(Default)]
struct Data {
    calls: Vec<(String, String)>,
    pulls: Vec<FakePull>,
    comments: Vec<FakeComment>,
    failures: VecDeque<Failure>,
    /// Issues and pull requests share GitHub's numbering.
    next_number: u64,
}

struct Shared {
    data: Mutex<Data>,
    bare: PathBuf,
    url: String,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake GitHub, stopped (and its repository deleted) on drop.
pub struct FakeForge {
    // Stopped first (fields drop in order), then the repository is deleted.
    _server: crate::loopback::Served,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

impl FakeForge {
    /// An empty bare repository (default branch `main`, no commits yet) and the API on an
    /// ephemeral port of 127.0.0.1, served from a thread of its own (usable from sync and async
    /// tests alike).
    pub fn start() -> FakeForge {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bare = dir.path().join("remote.git");
        let out = Command::new("git")
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&bare)
            .output()
            .expect("run git init");
        assert!(
            out.status.success(),
            "git init --bare failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bound = crate::loopback::bind();
        let url = bound.url.clone();
        let shared = Arc::new(Shared {
            data: Mutex::new(Data {
                next_number: 1,
                ..Data::default()
            }),
            bare,
            url,
        });
        let server = bound.serve(
            "fake-forge",
            Router::new().fallback(handle).with_state(shared.clone()),
        );
        FakeForge {
            _server: server,
            shared,
            _dir: dir,
        }
    }

    /// The API base, as `https://api.github.com` would be: `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> &str {
        &self.shared.url
    }

    /// `acme/infra`.
    pub fn repo(&self) -> String {
        format!("{OWNER}/{REPO}")
    }

    /// The token the fake accepts.
    pub fn token(&self) -> &'static str {
        TOKEN
    }

    /// The bare repository to push to (a path git accepts as a remote URL).
    pub fn remote_path(&self) -> &Path {
        &self.shared.bare
    }

    /// Answers the next `n` API requests with `status` instead of serving them: 403 (a
    /// permission refusal; with `retry_after`, a rate limit: `x-ratelimit-remaining: 0`,
    /// `x-ratelimit-reset` and `Retry-After`), 404, 429 (with `Retry-After` when given) or any
    /// 5xx. Calls queue up: `fail_next(500, 1, None); fail_next(429, 1, Some(1))` fails the
    /// next request with 500 and the one after with 429.
    pub fn fail_next(&self, status: u16, n: usize, retry_after: Option<u64>) {
        if n > 0 {
            self.shared.data().failures.push_back(Failure {
                status,
                left: n,
                retry_after,
            });
        }
    }

    /// Every request received, in order: `(METHOD, path)` (without the query).
    pub fn calls(&self) -> Vec<(String, String)> {
        self.shared.data().calls.clone()
    }

    pub fn pulls(&self) -> Vec<FakePull> {
        self.shared.data().pulls.clone()
    }

    pub fn pull(&self, number: u64) -> Option<FakePull> {
        self.shared
            .data()
            .pulls
            .iter()
            .find(|p| p.number == number)
            .cloned()
    }

    pub fn comments(&self) -> Vec<FakeComment> {
        self.shared.data().comments.clone()
    }

    /// Marks pull request `number` merged (as if someone pressed the button).
    pub fn set_merged(&self, number: u64) {
        self.set_state(number, FakeState::Merged);
    }

    /// Marks pull request `number` closed without merging.
    pub fn set_closed(&self, number: u64) {
        self.set_state(number, FakeState::Closed);
    }

    fn set_state(&self, number: u64, state: FakeState) {
        let mut data = self.shared.data();
        let pull = data
            .pulls
            .iter_mut()
            .find(|p| p.number == number)
            .unwrap_or_else(|| panic!("the fake forge has no pull request #{number}"));
        pull.state = state;
    }

    /// The branches of the bare repository.
    pub fn branches(&self) -> Vec<String> {
        let out = git(
            &self.shared.bare,
            &["for-each-ref", "--format=%(refname:strip=2)", "refs/heads"],
        );
        out.lines().map(str::to_string).collect()
    }

    /// The commit `branch` is at in the bare repository.
    pub fn branch_tip(&self, branch: &str) -> Option<String> {
        tip(&self.shared.bare, branch)
    }

    /// Runs git in the bare repository (`git show`, `git log`…) and returns its output.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.shared.bare, args)
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tip(bare: &Path, branch: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--verify", "-q"])
        .arg(format!("refs/heads/{branch}"))
        .current_dir(bare)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn not_found() -> Response {
    reply(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}),
    )
}

fn invalid(resource: &str, field: &str, code: &str, message: Option<String>) -> Response {
    let mut error = json!({"resource": resource, "field": field, "code": code});
    if let Some(m) = message {
        error["message"] = Value::String(m);
    }
    reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": "Validation Failed", "errors": [error], "status": "422"}),
    )
}

fn too_long(resource: &str, text: &str) -> Option<Response> {
    (text.chars().count() > BODY_LIMIT).then(|| {
        invalid(
            resource,
            "body",
            "custom",
            Some(format!(
                "body is too long (maximum is {BODY_LIMIT} characters)"
            )),
        )
    })
}

fn header(name: &'static str, value: String) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(&value).expect("a header value"),
    )
}

/// The injected failure for this request, if one is queued.
fn injected(shared: &Shared) -> Option<Response> {
    let failure = {
        let mut data = shared.data();
        let front = data.failures.front_mut()?;
        front.left -= 1;
        let f = (front.status, front.retry_after);
        if front.left == 0 {
            data.failures.pop_front();
        }
        f
    };
    let (status, retry_after) = failure;
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut headers = vec![header("x-ratelimit-limit", "5000".into())];
    let message = match (status, retry_after) {
        (403, Some(secs)) => {
            headers.push(header("x-ratelimit-remaining", "0".into()));
            headers.push(header("x-ratelimit-reset", (now + secs).to_string()));
            headers.push(header("retry-after", secs.to_string()));
            "API rate limit exceeded for user ID 1."
        }
        (403, None) => {
            headers.push(header("x-ratelimit-remaining", "4999".into()));
            "Resource not accessible by personal access token"
        }
        (404, _) => "Not Found",
        (429, secs) => {
            if let Some(secs) = secs {
                headers.push(header("retry-after", secs.to_string()));
            }
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        }
        (s, _) if s >= 500 => "Server Error",
        _ => "Injected failure",
    };
    let mut response = reply(
        code,
        json!({"message": message, "status": status.to_string()}),
    );
    response.headers_mut().extend(headers);
    Some(response)
}

/// Percent-decodes one query component (`+` is a space).
fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

fn pull_json(url: &str, bare: &Path, p: &FakePull) -> Value {
    json!({
        "url": format!("{url}/repos/{OWNER}/{REPO}/pulls/{}", p.number),
        "html_url": format!("{url}/{OWNER}/{REPO}/pull/{}", p.number),
        "number": p.number,
        "state": if p.state == FakeState::Open { "open" } else { "closed" },
        "merged": p.state == FakeState::Merged,
        "title": p.title,
        "body": p.body,
        "head": {
            "label": format!("{OWNER}:{}", p.head),
            "ref": p.head,
            "sha": tip(bare, &p.head),
        },
        "base": {"label": format!("{OWNER}:{}", p.base), "ref": p.base},
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared
        .data()
        .calls
        .push((method.to_string(), uri.path().to_string()));
    if let Some(failure) = injected(&shared) {
        return failure;
    }
    let bearer = format!("Bearer {TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    }
    if !headers.contains_key("user-agent") {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"}),
        );
    }
    if let Some(v) = headers.get("x-github-api-version")
        && v.as_bytes() != b"2022-11-28"
    {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"message": "Unsupported 'X-GitHub-Api-Version' header value"}),
        );
    }

    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    // GitHub Enterprise Server serves the same API under `/api/v3`.
    let segments = match segments.as_slice() {
        ["api", "v3", rest @ ..] => rest,
        all => all,
    };
    let ["repos", owner, repo, rest @ ..] = segments else {
        return not_found();
    };
    if *owner != OWNER || *repo != REPO {
        return not_found();
    }
    let input: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "Problems parsing JSON"}),
                );
            }
        }
    };
    match (method.as_str(), rest) {
        ("POST", ["pulls"]) => open(&shared, &input),
        ("GET", ["pulls"]) => list(&shared, &uri),
        ("GET", ["pulls", n]) => match n.parse::<u64>() {
            Ok(n) => get(&shared, n),
            Err(_) => not_found(),
        },
        ("PATCH", ["pulls", n]) => match n.parse::<u64>() {
            Ok(n) => update(&shared, n, &input),
            Err(_) => not_found(),
        },
        ("POST", ["issues", n, "comments"]) => match n.parse::<u64>() {
            Ok(n) => comment(&shared, n, &input),
            Err(_) => not_found(),
        },
        _ => not_found(),
    }
}

fn open(shared: &Shared, input: &Value) -> Response {
    let field = |k: &str| input[k].as_str().map(str::to_string);
    let (Some(title), Some(head), Some(base)) = (field("title"), field("head"), field("base"))
    else {
        return invalid("PullRequest", "head", "missing_field", None);
    };
    let body = field("body").unwrap_or_default();
    if title.trim().is_empty() {
        return invalid("PullRequest", "title", "missing_field", None);
    }
    if let Some(r) = too_long("PullRequest", &body) {
        return r;
    }
    let head = match head.split_once(':') {
        Some((owner, branch)) if owner == OWNER => branch.to_string(),
        Some(_) => return invalid("PullRequest", "head", "invalid", None),
        None => head,
    };
    let Some(head_tip) = tip(&shared.bare, &head) else {
        return invalid("PullRequest", "head", "invalid", None);
    };
    let Some(base_tip) = tip(&shared.bare, &base) else {
        return invalid("PullRequest", "base", "invalid", None);
    };
    if head_tip == base_tip {
        return invalid(
            "PullRequest",
            "",
            "custom",
            Some(format!("No commits between {base} and {head}")),
        );
    }
    let mut data = shared.data();
    if data
        .pulls
        .iter()
        .any(|p| p.head == head && p.base == base && p.state == FakeState::Open)
    {
        return invalid(
            "PullRequest",
            "",
            "custom",
            Some(format!("A pull request already exists for {OWNER}:{head}.")),
        );
    }
    let pull = FakePull {
        number: data.next_number,
        head,
        base,
        title,
        body,
        state: FakeState::Open,
    };
    data.next_number += 1;
    data.pulls.push(pull.clone());
    drop(data);
    reply(
        StatusCode::CREATED,
        pull_json(&shared.url, &shared.bare, &pull),
    )
}

fn list(shared: &Shared, uri: &Uri) -> Response {
    let head = query(uri, "head");
    let base = query(uri, "base");
    let state = query(uri, "state").unwrap_or_else(|| "open".into());
    let pulls: Vec<FakePull> = shared
        .data()
        .pulls
        .iter()
        .filter(|p| match &head {
            // GitHub filters by `user:ref-name`; a bare branch name matches nothing.
            Some(h) => h.split_once(':') == Some((OWNER, p.head.as_str())),
            None => true,
        })
        .filter(|p| base.as_ref().is_none_or(|b| *b == p.base))
        .filter(|p| match state.as_str() {
            "all" => true,
            "closed" => p.state != FakeState::Open,
            _ => p.state == FakeState::Open,
        })
        .cloned()
        .collect();
    let items: Vec<Value> = pulls
        .iter()
        .map(|p| pull_json(&shared.url, &shared.bare, p))
        .collect();
    reply(StatusCode::OK, Value::Array(items))
}

fn get(shared: &Shared, number: u64) -> Response {
    let found = shared
        .data()
        .pulls
        .iter()
        .find(|p| p.number == number)
        .cloned();
    match found {
        Some(p) => reply(StatusCode::OK, pull_json(&shared.url, &shared.bare, &p)),
        None => not_found(),
    }
}

fn update(shared: &Shared, number: u64, input: &Value) -> Response {
    if let Some(body) = input["body"].as_str()
        && let Some(r) = too_long("PullRequest", body)
    {
        return r;
    }
    if let Some(base) = input["base"].as_str()
        && tip(&shared.bare, base).is_none()
    {
        return invalid("PullRequest", "base", "invalid", None);
    }
    let mut data = shared.data();
    let Some(pull) = data.pulls.iter_mut().find(|p| p.number == number) else {
        return not_found();
    };
    if let Some(title) = input["title"].as_str() {
        pull.title = title.to_string();
    }
    if let Some(body) = input["body"].as_str() {
        pull.body = body.to_string();
    }
    if let Some(base) = input["base"].as_str() {
        pull.base = base.to_string();
    }
    match input["state"].as_str() {
        Some("closed") if pull.state == FakeState::Open => pull.state = FakeState::Closed,
        Some("open") if pull.state == FakeState::Closed => pull.state = FakeState::Open,
        _ => {}
    }
    let pull = pull.clone();
    drop(data);
    reply(StatusCode::OK, pull_json(&shared.url, &shared.bare, &pull))
}

fn comment(shared: &Shared, number: u64, input: &Value) -> Response {
    let Some(body) = input["body"].as_str() else {
        return invalid("IssueComment", "body", "missing_field", None);
    };
    if let Some(r) = too_long("IssueComment", body) {
        return r;
    }
    let mut data = shared.data();
    if !data.pulls.iter().any(|p| p.number == number) {
        return not_found();
    }
    data.comments.push(FakeComment {
        number,
        body: body.to_string(),
    });
    let id = data.comments.len();
    drop(data);
    reply(
        StatusCode::CREATED,
        json!({
            "id": id,
            "html_url": format!("{}/{OWNER}/{REPO}/pull/{number}#issuecomment-{id}", shared.url),
            "body": body,
        }),
    )
}
