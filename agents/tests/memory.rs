//! The agents' memory: the contract suite on every backend, one test per backend and check
//! (`sqlite::filters`, `qdrant_fake::outcomes`, `qdrant_real::limit`), plus the embedder and
//! each backend's own promises.
//!
//! - `sqlite::*`: the embedded memory in a temporary file.
//! - `qdrant_fake::*`: `QdrantMemory` against an in-process fake of Qdrant's gRPC service on
//!   127.0.0.1 (qdrant-client's own generated tonic server traits; only the RPCs
//!   `QdrantMemory` uses are served, every other one answers `Unimplemented`).
//! - `qdrant::*`: what `QdrantMemory::connect` says of a closed port, a server that never
//!   answers, an HTTP/1.1 server and malformed URLs: a clear error, never a hang.
//! - `qdrant_real::*`: against a real server, only when `QDRANT_URL` is set (with
//!   `QDRANT_API_KEY` if the server wants one); listed as ignored otherwise.

use std::path::Path;

use async_trait::async_trait;
use chimera_agents::memory::{
    self, Embedder, Filter, HashingEmbedder, Memory, MemoryError, Record, RecordKind, SqliteMemory,
    contract, cosine,
};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![
        Trial::test("embedder::deterministic", embedder_deterministic),
        Trial::test(
            "embedder::similar_texts_score_higher",
            embedder_similar_texts_score_higher,
        ),
        Trial::test("recalled_reads_like_a_memory", || {
            run(recalled_reads_like_a_memory())
        }),
        Trial::test("memories_for_the_context", || {
            run(memories_for_the_context())
        }),
        Trial::test("outcome_weights", outcome_weights),
        Trial::test("sqlite::reopen_keeps_records", || {
            run(sqlite_reopen_keeps_records())
        }),
        Trial::test("sqlite::dimension_mismatch_is_refused", || {
            run(sqlite_dimension_mismatch_is_refused())
        }),
        Trial::test("sqlite::all_checks_share_one_memory", || {
            run(sqlite_all_checks_share_one_memory())
        }),
        Trial::test("sqlite::open_without_qdrant_url", || {
            run(sqlite_open_without_qdrant_url())
        }),
        Trial::test("broken_memory_fails_many_checks", || {
            run(broken_memory_fails_many_checks())
        }),
    ];
    for check in contract::Check::ALL {
        trials.push(Trial::test(format!("sqlite::{check}"), move || {
            run(async move {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let mem = sqlite_at(dir.path()).await?;
                outcome(contract::check(&mem, check, "t").await)
            })
        }));
    }
    #[cfg(feature = "qdrant")]
    qdrant::trials(&mut trials);
    libtest_mimic::run(&args, trials).exit();
}

/// Runs a test on its own runtime; a test's error becomes its failure message.
fn run(test: impl Future<Output = Result<(), String>>) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("tokio runtime: {e}")))?;
    rt.block_on(test).map_err(Failed::from)
}

fn outcome(r: Result<(), Vec<String>>) -> Result<(), String> {
    r.map_err(|failures| failures.join("\n"))
}

async fn sqlite_at(dir: &Path) -> Result<SqliteMemory, String> {
    SqliteMemory::open(&dir.join("agent-memory.db"))
        .await
        .map_err(|e| e.to_string())
}

fn sample(id: &str, text: &str, outcome: &str) -> Record {
    Record {
        id: id.into(),
        stack: "shop".into(),
        kind: RecordKind::Proposal,
        resource_kind: Some("volume".into()),
        text: text.into(),
        outcome: outcome.into(),
        pr: Some(12),
        created_unix: 1_760_000_000,
    }
}

fn embedder_deterministic() -> Result<(), Failed> {
    let text = "Resize the web instance to t3.large";
    let (a, b) = (HashingEmbedder::default(), HashingEmbedder::new(256));
    let (va, vb) = (a.embed(text), b.embed(text));
    let mut problems = Vec::new();
    if va != vb || va != a.embed(text) {
        problems.push("the same text must embed to the same vector".to_string());
    }
    if va.len() != 256 || a.dim() != 256 {
        problems.push(format!("the default dimension is 256, got {}", va.len()));
    }
    let norm = va.iter().map(|x| x * x).sum::<f32>().sqrt();
    if (norm - 1.0).abs() > 1e-5 {
        problems.push(format!("vectors are L2-normalised, got a norm of {norm}"));
    }
    if a.embed("RESIZE the web instance, to t3.large!") != va {
        problems.push("case and punctuation must not change the vector".to_string());
    }
    if HashingEmbedder::new(64).embed(text).len() != 64 {
        problems.push("the dimension is the one asked for".to_string());
    }
    if a.embed("").iter().any(|x| *x != 0.0) || a.embed(" ,;. ").iter().any(|x| *x != 0.0) {
        problems.push("a text without words is the zero vector".to_string());
    }
    // A fixed point: the hashing must not change between versions, or stored vectors stop
    // matching new queries.
    let fixed: Vec<f32> = HashingEmbedder::new(8).embed("volume drift");
    let again: Vec<f32> = HashingEmbedder::new(8).embed("volume drift");
    if fixed != again {
        problems.push("a fresh embedder must agree with another".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn embedder_similar_texts_score_higher() -> Result<(), Failed> {
    let e = HashingEmbedder::default();
    let cases = [
        (
            "the data volume drifted: encryption was disabled",
            "re-enable encryption on the drifted data volume",
            "open port 443 on the firewall for the load balancer",
        ),
        (
            "cut the monthly cost of the web instances by 30%",
            "reduce instance cost: move web instances to a smaller size",
            "add a private subnet for the database replicas",
        ),
        (
            "open port 443 on the firewall",
            "firewall rule for port 443 added",
            "snapshot the volumes every night",
        ),
        (
            "resize volumes",
            "the volume was resized",
            "rotate the api keys",
        ),
    ];
    let mut problems = Vec::new();
    for (query, similar, unrelated) in cases {
        let q = e.embed(query);
        let (s, u) = (
            cosine(&q, &e.embed(similar)),
            cosine(&q, &e.embed(unrelated)),
        );
        if s <= u + 0.1 {
            problems.push(format!(
                "`{query}`: `{similar}` ({s:.3}) must score clearly above `{unrelated}` ({u:.3})"
            ));
        }
    }
    let q = e.embed("volume encryption");
    if (cosine(&q, &q) - 1.0).abs() > 1e-5 {
        problems.push("a text is fully similar to itself".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

async fn recalled_reads_like_a_memory() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mem = sqlite_at(dir.path()).await?;
    let err = |e: MemoryError| e.to_string();
    mem.remember(sample("a", "encrypt the data volume", "merged"))
        .await
        .map_err(err)?;
    mem.remember(Record {
        kind: RecordKind::Incident,
        resource_kind: None,
        pr: None,
        ..sample("b", "the data volume lost its encryption", "healed")
    })
    .await
    .map_err(err)?;
    let hits = mem
        .recall("encrypt the data volume", &Filter::stack("shop"), 5)
        .await
        .map_err(err)?;
    let got = memory::recalled(&hits);
    let texts: Vec<&str> = got.iter().map(|r| r.text.as_str()).collect();
    let want = [
        "proposal on volume (PR #12): encrypt the data volume",
        "incident: the data volume lost its encryption",
    ];
    if texts != want {
        return Err(format!("expected {want:?}, got {texts:?}"));
    }
    if got[0].outcome != "merged" || got[0].score != hits[0].1 || got[0].score <= got[1].score {
        return Err(format!(
            "outcome and score are carried over in order: {got:?}"
        ));
    }
    Ok(())
}

/// What the propose loop does: recall for an intent, remember the proposal with its outcome,
/// set it merged later; failed proposals come back below the ones that worked.
async fn memories_for_the_context() -> Result<(), String> {
    use memory::outcome::{DENIED, MERGED, NOT_COMPILED, OPENED};
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mem = sqlite_at(dir.path()).await?;
    let err = |e: MemoryError| e.to_string();
    let intent = "cut the monthly cost of the web instances by 30%";
    if !memory::memories(&mem, intent, "shop", 3)
        .await
        .map_err(err)?
        .is_empty()
    {
        return Err("an empty memory recalls nothing".into());
    }
    let kept = mem
        .remember(
            Record::new("shop", RecordKind::Proposal, intent, OPENED)
                .on("instance")
                .with_pr(7),
        )
        .await
        .map_err(err)?;
    let broken = mem
        .remember(Record::new(
            "shop",
            RecordKind::Proposal,
            intent,
            NOT_COMPILED,
        ))
        .await
        .map_err(err)?;
    mem.remember(Record::new("shop", RecordKind::Proposal, intent, DENIED))
        .await
        .map_err(err)?;
    mem.remember(Record::new("blog", RecordKind::Proposal, intent, MERGED))
        .await
        .map_err(err)?;
    if kept == broken || !kept.starts_with("proposal-") {
        return Err(format!(
            "new ids are distinct and name the kind: `{kept}`, `{broken}`"
        ));
    }
    if !mem.set_outcome(&kept, MERGED).await.map_err(err)? {
        return Err(format!("set_outcome did not find `{kept}`"));
    }
    let got = memory::memories(&mem, "reduce the web instance cost", "shop", 2)
        .await
        .map_err(err)?;
    let summary: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.text.as_str(), r.outcome.as_str()))
        .collect();
    let head = format!("proposal on instance (PR #7): {intent}");
    if got.len() != 2 || summary[0] != (head.as_str(), MERGED) {
        return Err(format!(
            "the merged proposal of this stack comes first: {summary:?}"
        ));
    }
    if ![NOT_COMPILED, DENIED].contains(&summary[1].1) || got[1].score >= got[0].score / 2.0 {
        return Err(format!("failed proposals rank far below: {got:?}"));
    }
    Ok(())
}

fn outcome_weights() -> Result<(), Failed> {
    use memory::{BONUS, PENALTY, outcome::*, outcome_weight, ranked_score};
    let mut problems = Vec::new();
    for (word, want) in [
        (OPENED, 1.0),
        (MERGED, BONUS),
        (HEALED, BONUS),
        (CLOSED, PENALTY),
        (REJECTED, PENALTY),
        (FAILED, PENALTY),
        (NOT_COMPILED, PENALTY),
        (DENIED, PENALTY),
        (TARGET_MISSED, PENALTY),
        (UNSUPPORTED, PENALTY),
        (COMMITTED, 1.0),
        (VERIFIED, 1.0),
        (" Merged ", BONUS),
        ("something else", 1.0),
    ] {
        if outcome_weight(word) != want {
            problems.push(format!(
                "`{word}` weighs {}, not {want}",
                outcome_weight(word)
            ));
        }
    }
    // A penalty moves a negative similarity down too.
    if ranked_score(-0.2, REJECTED) >= -0.2 || ranked_score(-0.2, MERGED) <= -0.2 {
        problems.push("weights must move negative similarities the same way".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

async fn sqlite_reopen_keeps_records() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rec = sample("kept", "grow the data volume to 200 GiB", "opened");
    {
        let mem = sqlite_at(dir.path()).await?;
        mem.remember(rec.clone()).await.map_err(|e| e.to_string())?;
        mem.set_outcome("kept", "merged")
            .await
            .map_err(|e| e.to_string())?;
    }
    let mem = sqlite_at(dir.path()).await?;
    let got = mem.get("kept").await.map_err(|e| e.to_string())?;
    let want = Record {
        outcome: "merged".into(),
        ..rec
    };
    if got.as_ref() != Some(&want) {
        return Err(format!("after reopening: expected {want:?}, got {got:?}"));
    }
    let hits = mem
        .recall("data volume size", &Filter::default(), 3)
        .await
        .map_err(|e| e.to_string())?;
    if hits.len() != 1 {
        return Err(format!(
            "the reopened memory recalls its record, got {hits:?}"
        ));
    }
    Ok(())
}

async fn sqlite_dimension_mismatch_is_refused() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("nested/agent-memory.db");
    let mem = SqliteMemory::open(&path).await.map_err(|e| e.to_string())?;
    mem.remember(sample("a", "anything", "opened"))
        .await
        .map_err(|e| e.to_string())?;
    drop(mem);
    match SqliteMemory::open_with(&path, HashingEmbedder::new(64)).await {
        Err(MemoryError::Dimension {
            stored: 256,
            embedder: 64,
            ..
        }) => Ok(()),
        Err(e) => Err(format!("expected a dimension error, got {e}")),
        Ok(_) => {
            Err("a store of 256-dimensional vectors opened with a 64-dimensional embedder".into())
        }
    }
}

async fn sqlite_all_checks_share_one_memory() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mem = sqlite_at(dir.path()).await?;
    let failed = contract::check_all(&mem, "shared").await;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{failed:#?}"))
    }
}

async fn sqlite_open_without_qdrant_url() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let env = |k: &str| (k == "QDRANT_URL").then(String::new);
    let mem = memory::open(dir.path(), env, HashingEmbedder::default())
        .await
        .map_err(|e| e.to_string())?;
    mem.remember(sample("a", "anything", "opened"))
        .await
        .map_err(|e| e.to_string())?;
    let file = dir.path().join(".chimera/agent-memory.db");
    if !file.exists() || memory::default_path(dir.path()) != file {
        return Err(format!("the embedded memory lives at {}", file.display()));
    }
    Ok(())
}

/// A memory that ignores filters and never changes an outcome.
struct Broken(SqliteMemory);

#[async_trait]
impl Memory for Broken {
    async fn remember(&self, rec: Record) -> Result<String, MemoryError> {
        self.0.remember(rec).await
    }
    async fn recall(
        &self,
        query: &str,
        _: &Filter,
        k: usize,
    ) -> Result<Vec<(Record, f32)>, MemoryError> {
        self.0.recall(query, &Filter::default(), k).await
    }
    async fn set_outcome(&self, id: &str, _: &str) -> Result<bool, MemoryError> {
        Ok(self.0.get(id).await?.is_some())
    }
    async fn get(&self, id: &str) -> Result<Option<Record>, MemoryError> {
        self.0.get(id).await
    }
}

async fn broken_memory_fails_many_checks() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let broken = Broken(sqlite_at(dir.path()).await?);
    let failed = contract::check_all(&broken, "broken").await;
    let text = format!("{failed:#?}");
    let names: Vec<&str> = failed.iter().map(|(c, _)| c.as_str()).collect();
    let problems = [
        (
            failed.len() >= 5,
            format!("only {names:?} failed of {}", contract::Check::ALL.len()),
        ),
        (
            text.contains("do not match"),
            "the ignored filter was not reported".into(),
        ),
        (
            text.contains("must change the outcome"),
            "the lost outcome was not reported".into(),
        ),
        (
            failed.iter().any(|(_, f)| f.len() > 1),
            "no check reported more than its first failure".into(),
        ),
    ];
    let broken: Vec<String> = problems
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, m)| m)
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{text}", broken.join("\n")))
    }
}

#[cfg(feature = "qdrant")]
mod qdrant {
    use super::*;
    use chimera_agents::memory::{QdrantMemory, QdrantOptions};

    pub fn trials(trials: &mut Vec<Trial>) {
        for check in contract::Check::ALL {
            trials.push(Trial::test(format!("qdrant_fake::{check}"), move || {
                run(async move {
                    let fake = fake::start().await?;
                    let mem = connect(&fake.url, None).await?;
                    outcome(contract::check(&mem, check, "t").await)
                })
            }));
        }
        trials.push(Trial::test(
            "qdrant_fake::dimension_mismatch_is_refused",
            || run(dimension_mismatch_is_refused()),
        ));
        trials.push(Trial::test("qdrant_fake::open_with_qdrant_url", || {
            run(open_with_qdrant_url())
        }));
        trials.push(Trial::test("qdrant::unreachable_is_unavailable", || {
            run(unreachable_is_unavailable())
        }));
        trials.push(Trial::test("qdrant::silent_server_times_out", || {
            run(silent_server_times_out())
        }));
        trials.push(Trial::test("qdrant::bad_urls_are_refused", || {
            run(bad_urls_are_refused())
        }));
        trials.push(Trial::test("qdrant::http1_server_is_refused", || {
            run(http1_server_is_refused())
        }));
        let url = std::env::var("QDRANT_URL")
            .ok()
            .filter(|u| !u.trim().is_empty());
        if url.is_none() {
            eprintln!(
                "QDRANT_URL is not set: the qdrant_real tests are skipped (start Qdrant and set QDRANT_URL=http://127.0.0.1:6334, and QDRANT_API_KEY if needed, to run them)"
            );
        }
        // One namespace per run: a real server keeps the records of earlier runs.
        let ns = format!(
            "run{}{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            fastrand::u32(..)
        );
        for check in contract::Check::ALL {
            let (url, ns) = (url.clone(), ns.clone());
            let skip = url.is_none();
            trials.push(
                Trial::test(format!("qdrant_real::{check}"), move || {
                    let Some(url) = url else {
                        return Ok(());
                    };
                    run(async move {
                        let key = std::env::var("QDRANT_API_KEY").ok();
                        let mem = connect(&url, key.as_deref()).await?;
                        outcome(contract::check(&mem, check, &ns).await)
                    })
                })
                .with_ignored_flag(skip),
            );
        }
    }

    async fn connect(url: &str, key: Option<&str>) -> Result<QdrantMemory, String> {
        let options = QdrantOptions {
            api_key: key.map(str::to_string),
            ..QdrantOptions::default()
        };
        QdrantMemory::connect_with(url, options, HashingEmbedder::default())
            .await
            .map_err(|e| e.to_string())
    }

    async fn dimension_mismatch_is_refused() -> Result<(), String> {
        let fake = fake::start().await?;
        connect(&fake.url, None).await?;
        let small = HashingEmbedder::new(64);
        match QdrantMemory::connect_with(&fake.url, QdrantOptions::default(), small).await {
            Err(MemoryError::Dimension {
                stored: 256,
                embedder: 64,
                ..
            }) => Ok(()),
            Err(e) => Err(format!("expected a dimension error, got {e}")),
            Ok(_) => Err(
                "collections of 256-dimensional vectors accepted a 64-dimensional embedder".into(),
            ),
        }
    }

    async fn open_with_qdrant_url() -> Result<(), String> {
        let fake = fake::start().await?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let url = fake.url.clone();
        let env = move |k: &str| match k {
            "QDRANT_URL" => Some(url.clone()),
            "QDRANT_API_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let mem = memory::open(dir.path(), env, HashingEmbedder::default())
            .await
            .map_err(|e| e.to_string())?;
        mem.remember(sample("a", "anything", "opened"))
            .await
            .map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        if fake.points(QdrantMemory::collection(RecordKind::Proposal)) != 1 {
            problems.push("the record must be stored in Qdrant's chimera_proposals".to_string());
        }
        if dir.path().join(memory::DB_FILE).exists() {
            problems.push("no SQLite file is made when QDRANT_URL is set".to_string());
        }
        if fake.api_keys() != ["secret"] {
            problems.push(format!(
                "QDRANT_API_KEY must be sent as the `api-key` header, the fake saw {:?}",
                fake.api_keys()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Fails instead of hanging when `connect` never returns (the guard against a hang, not a
    /// performance assertion: the memory's own timeouts are far shorter).
    async fn bounded<T>(
        what: &str,
        f: impl Future<Output = Result<T, MemoryError>>,
    ) -> Result<Result<T, MemoryError>, String> {
        tokio::time::timeout(std::time::Duration::from_secs(120), f)
            .await
            .map_err(|_| format!("{what}: connect hung instead of failing"))
    }

    async fn unreachable_is_unavailable() -> Result<(), String> {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        match bounded("a closed port", QdrantMemory::connect(&url)).await? {
            Err(MemoryError::Unavailable(m))
                if m.contains(&url) && m.contains("cannot reach") && m.contains("6334") =>
            {
                Ok(())
            }
            Err(e) => Err(format!(
                "expected Unavailable naming the server and the gRPC port, got {e:?}"
            )),
            Ok(_) => Err("connected to nothing".into()),
        }
    }

    async fn silent_server_times_out() -> Result<(), String> {
        // Accepts connections and never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let options = QdrantOptions {
            api_key: Some("hunter2-key".into()),
            timeout: std::time::Duration::from_millis(500),
            connect_timeout: std::time::Duration::from_millis(500),
        };
        let got = bounded(
            "a silent server",
            QdrantMemory::connect_with(&url, options, HashingEmbedder::default()),
        )
        .await;
        held.abort();
        match got? {
            Err(MemoryError::Unavailable(m))
                if m.contains(&url) && m.contains("did not answer") && !m.contains("hunter2") =>
            {
                Ok(())
            }
            Err(e) => Err(format!(
                "expected Unavailable saying the server did not answer (and no API key), got {e:?}"
            )),
            Ok(_) => Err("a server that never answers was accepted".into()),
        }
    }

    async fn bad_urls_are_refused() -> Result<(), String> {
        let mut problems = Vec::new();
        for url in [
            "localhost:6334",
            "not a url",
            "ftp://127.0.0.1:6334",
            "",
            "http://admin:hunter2@127.0.0.1:1",
        ] {
            match bounded(url, QdrantMemory::connect(url)).await? {
                Err(MemoryError::Unavailable(m)) => {
                    if !m.contains("http://localhost:6334") {
                        problems.push(format!("`{url}`: the error must show a good URL: {m}"));
                    }
                    if m.contains("hunter2") {
                        problems.push(format!("`{url}`: the error shows the password: {m}"));
                    }
                }
                Err(e) => problems.push(format!("`{url}`: expected Unavailable, got {e:?}")),
                Ok(_) => problems.push(format!("`{url}` was accepted")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    async fn http1_server_is_refused() -> Result<(), String> {
        // What QDRANT_URL pointing at a REST port (6333) looks like: an HTTP/1.1 server.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let served = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        let got = bounded("an HTTP/1.1 server", QdrantMemory::connect(&url)).await;
        served.abort();
        match got? {
            Err(e @ (MemoryError::Unavailable(_) | MemoryError::Backend(_))) => {
                let m = e.to_string();
                if m.contains(&url) && m.contains("6333") {
                    Ok(())
                } else {
                    Err(format!(
                        "the error must name the server and hint at the ports: {m}"
                    ))
                }
            }
            Err(e) => Err(format!("expected Unavailable or Backend, got {e:?}")),
            Ok(_) => Err("an HTTP/1.1 server was taken for Qdrant".into()),
        }
    }

    /// An in-process Qdrant: collections, points with payloads, cosine search and payload
    /// filters, held in memory, served over gRPC through the server traits qdrant-client
    /// generates. Deliberately stricter than the real one: anything `QdrantMemory` does not
    /// use (named vectors, nested keys, filters other than keyword/integer/bool matches,
    /// offsets, filter selectors) is refused as `Unimplemented`, and point ids must be valid
    /// UUIDs or numbers.
    mod fake {
        use std::collections::{BTreeMap, BTreeSet, HashMap};
        use std::sync::{Arc, Mutex, MutexGuard};

        use q::collections_server::{Collections, CollectionsServer};
        use q::points_server::{Points, PointsServer};
        use qdrant_client::qdrant as q;
        use tonic::{Request, Response, Status};

        pub struct Fake {
            pub url: String,
            state: Arc<Mutex<State>>,
            stop: Option<tokio::sync::oneshot::Sender<()>>,
        }

        impl Drop for Fake {
            fn drop(&mut self) {
                if let Some(stop) = self.stop.take() {
                    let _ = stop.send(());
                }
            }
        }

        impl Fake {
            /// How many points a collection holds.
            pub fn points(&self, collection: &str) -> usize {
                lock(&self.state)
                    .collections
                    .get(collection)
                    .map_or(0, |c| c.points.len())
            }

            /// The distinct `api-key` headers requests carried.
            pub fn api_keys(&self) -> Vec<String> {
                lock(&self.state).api_keys.iter().cloned().collect()
            }
        }

        #[derive(Default)]
        struct State {
            collections: HashMap<String, Collection>,
            api_keys: BTreeSet<String>,
        }

        struct Collection {
            dim: usize,
            indexes: BTreeSet<String>,
            points: BTreeMap<String, Point>,
        }

        #[derive(Clone)]
        struct Point {
            id: q::PointId,
            /// Normalised on upsert, as Qdrant does for cosine distance.
            vector: Vec<f32>,
            payload: HashMap<String, q::Value>,
        }

        #[derive(Clone)]
        struct Service(Arc<Mutex<State>>);

        fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
            state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Serves the fake on 127.0.0.1 until the returned handle is dropped.
        pub async fn start() -> Result<Fake, String> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("bind: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let state = Arc::new(Mutex::new(State::default()));
            let svc = Service(state.clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(CollectionsServer::new(svc.clone()))
                    .add_service(PointsServer::new(svc))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            Ok(Fake {
                url: format!("http://{addr}"),
                state,
                stop: Some(stop),
            })
        }

        impl Service {
            /// The state, after noting the request's API key.
            fn state<T>(&self, req: &Request<T>) -> MutexGuard<'_, State> {
                let mut st = lock(&self.0);
                if let Some(key) = req.metadata().get("api-key").and_then(|v| v.to_str().ok()) {
                    st.api_keys.insert(key.to_string());
                }
                st
            }
        }

        fn missing(name: &str) -> Status {
            Status::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
        }

        fn unimplemented(what: &str) -> Status {
            Status::unimplemented(format!("the fake Qdrant does not serve {what}"))
        }

        fn done() -> q::PointsOperationResponse {
            q::PointsOperationResponse {
                result: Some(q::UpdateResult {
                    operation_id: Some(0),
                    status: q::UpdateStatus::Completed as i32,
                }),
                time: 0.0,
                usage: None,
            }
        }

        /// The key a point is stored under; only numbers and well-formed UUIDs are ids.
        fn key(id: Option<&q::PointId>) -> Result<String, Status> {
            use q::point_id::PointIdOptions;
            match id.and_then(|p| p.point_id_options.as_ref()) {
                Some(PointIdOptions::Num(n)) => Ok(format!("#{n}")),
                Some(PointIdOptions::Uuid(u)) => {
                    let shape = u.len() == 36
                        && u.char_indices().all(|(i, c)| {
                            if [8, 13, 18, 23].contains(&i) {
                                c == '-'
                            } else {
                                c.is_ascii_hexdigit()
                            }
                        });
                    if shape {
                        Ok(u.to_ascii_lowercase())
                    } else {
                        Err(Status::invalid_argument(format!(
                            "Unable to parse UUID: {u}"
                        )))
                    }
                }
                None => Err(Status::invalid_argument("a point without an id")),
            }
        }

        fn ids(selector: Option<&q::PointsSelector>) -> Result<Vec<String>, Status> {
            use q::points_selector::PointsSelectorOneOf;
            match selector.and_then(|s| s.points_selector_one_of.as_ref()) {
                Some(PointsSelectorOneOf::Points(list)) => {
                    list.ids.iter().map(|id| key(Some(id))).collect()
                }
                Some(PointsSelectorOneOf::Filter(_)) => Err(unimplemented("filter selectors")),
                None => Err(Status::invalid_argument("no points selected")),
            }
        }

        fn normalised(mut v: Vec<f32>) -> Vec<f32> {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                v.iter_mut().for_each(|x| *x /= n);
            }
            v
        }

        #[allow(deprecated)]
        fn dense(v: Option<&q::Vectors>) -> Result<Vec<f32>, Status> {
            use q::vectors::VectorsOptions;
            match v.and_then(|v| v.vectors_options.as_ref()) {
                Some(VectorsOptions::Vector(v)) => match &v.vector {
                    Some(q::vector::Vector::Dense(d)) => Ok(d.data.clone()),
                    None if !v.data.is_empty() => Ok(v.data.clone()),
                    _ => Err(unimplemented("vectors other than dense")),
                },
                Some(VectorsOptions::Vectors(_)) => Err(unimplemented("named vectors")),
                None => Err(Status::invalid_argument("a point without a vector")),
            }
        }

        fn enabled(sel: Option<&q::WithPayloadSelector>) -> Result<bool, Status> {
            use q::with_payload_selector::SelectorOptions;
            match sel.and_then(|s| s.selector_options.as_ref()) {
                Some(SelectorOptions::Enable(on)) => Ok(*on),
                None => Ok(false),
                Some(_) => Err(unimplemented("payload include/exclude selectors")),
            }
        }

        /// Whether a payload passes a filter: all of `must`, none of `must_not`, and one of
        /// `should` when there are any.
        fn passes(f: &q::Filter, payload: &HashMap<String, q::Value>) -> Result<bool, Status> {
            if f.min_should.is_some() {
                return Err(unimplemented("min_should"));
            }
            for c in &f.must {
                if !holds(c, payload)? {
                    return Ok(false);
                }
            }
            for c in &f.must_not {
                if holds(c, payload)? {
                    return Ok(false);
                }
            }
            if f.should.is_empty() {
                return Ok(true);
            }
            for c in &f.should {
                if holds(c, payload)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }

        fn holds(c: &q::Condition, payload: &HashMap<String, q::Value>) -> Result<bool, Status> {
            use q::condition::ConditionOneOf;
            use q::r#match::MatchValue;
            use q::value::Kind;
            match c.condition_one_of.as_ref() {
                Some(ConditionOneOf::Filter(f)) => passes(f, payload),
                Some(ConditionOneOf::Field(fc)) => {
                    if fc.key.contains('.') || fc.key.contains('[') {
                        return Err(unimplemented("nested payload keys"));
                    }
                    let m = fc
                        .r#match
                        .as_ref()
                        .and_then(|m| m.match_value.as_ref())
                        .ok_or_else(|| unimplemented("field conditions other than match"))?;
                    let value = payload.get(&fc.key).and_then(|v| v.kind.as_ref());
                    // A list matches when one of its values does, as in Qdrant.
                    let values: Vec<&Kind> = match value {
                        Some(Kind::ListValue(l)) => {
                            l.values.iter().filter_map(|v| v.kind.as_ref()).collect()
                        }
                        Some(k) => vec![k],
                        None => vec![],
                    };
                    values
                        .into_iter()
                        .map(|v| match (m, v) {
                            (MatchValue::Keyword(want), Kind::StringValue(s)) => Ok(want == s),
                            (MatchValue::Integer(want), Kind::IntegerValue(i)) => Ok(want == i),
                            (MatchValue::Boolean(want), Kind::BoolValue(b)) => Ok(want == b),
                            (
                                MatchValue::Keyword(_)
                                | MatchValue::Integer(_)
                                | MatchValue::Boolean(_),
                                _,
                            ) => Ok(false),
                            _ => Err(unimplemented("matches other than keyword, integer, bool")),
                        })
                        .try_fold(false, |any, r| r.map(|m| any || m))
                }
                Some(_) => Err(unimplemented("conditions other than field matches")),
                None => Err(Status::invalid_argument("an empty condition")),
            }
        }

        macro_rules! service {
            (
                impl $trait:ident for $ty:ty { $($served:tt)* }
                refused { $($name:ident($req:ident) -> $resp:ident;)* }
            ) => {
                #[async_trait::async_trait]
                impl $trait for $ty {
                    $($served)*
                    $(
                        async fn $name(
                            &self,
                            _: Request<q::$req>,
                        ) -> Result<Response<q::$resp>, Status> {
                            Err(unimplemented(stringify!($name)))
                        }
                    )*
                }
            };
        }

        service! {
            impl Collections for Service {
                async fn get(
                    &self,
                    req: Request<q::GetCollectionInfoRequest>,
                ) -> Result<Response<q::GetCollectionInfoResponse>, Status> {
                    let st = self.state(&req);
                    let name = &req.get_ref().collection_name;
                    let c = st.collections.get(name).ok_or_else(|| missing(name))?;
                    let params = q::VectorParams {
                        size: c.dim as u64,
                        distance: q::Distance::Cosine as i32,
                        ..Default::default()
                    };
                    let info = q::CollectionInfo {
                        status: q::CollectionStatus::Green as i32,
                        points_count: Some(c.points.len() as u64),
                        config: Some(q::CollectionConfig {
                            params: Some(q::CollectionParams {
                                shard_number: 1,
                                vectors_config: Some(q::VectorsConfig {
                                    config: Some(q::vectors_config::Config::Params(params)),
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    Ok(Response::new(q::GetCollectionInfoResponse {
                        result: Some(info),
                        time: 0.0,
                    }))
                }

                async fn create(
                    &self,
                    req: Request<q::CreateCollection>,
                ) -> Result<Response<q::CollectionOperationResponse>, Status> {
                    let mut st = self.state(&req);
                    let r = req.get_ref();
                    if st.collections.contains_key(&r.collection_name) {
                        return Err(Status::already_exists(format!(
                            "Wrong input: Collection `{}` already exists!",
                            r.collection_name
                        )));
                    }
                    let params = match r.vectors_config.as_ref().and_then(|v| v.config.as_ref()) {
                        Some(q::vectors_config::Config::Params(p)) => p,
                        _ => return Err(unimplemented("collections without one unnamed vector")),
                    };
                    if params.distance != q::Distance::Cosine as i32 || params.size == 0 {
                        return Err(unimplemented("distances other than cosine"));
                    }
                    st.collections.insert(
                        r.collection_name.clone(),
                        Collection {
                            dim: params.size as usize,
                            indexes: BTreeSet::new(),
                            points: BTreeMap::new(),
                        },
                    );
                    Ok(Response::new(q::CollectionOperationResponse {
                        result: true,
                        time: 0.0,
                    }))
                }

                async fn collection_exists(
                    &self,
                    req: Request<q::CollectionExistsRequest>,
                ) -> Result<Response<q::CollectionExistsResponse>, Status> {
                    let st = self.state(&req);
                    let exists = st.collections.contains_key(&req.get_ref().collection_name);
                    Ok(Response::new(q::CollectionExistsResponse {
                        result: Some(q::CollectionExists { exists }),
                        time: 0.0,
                    }))
                }
            }
            refused {
                list(ListCollectionsRequest) -> ListCollectionsResponse;
                update(UpdateCollection) -> CollectionOperationResponse;
                delete(DeleteCollection) -> CollectionOperationResponse;
                update_aliases(ChangeAliases) -> CollectionOperationResponse;
                list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
                list_aliases(ListAliasesRequest) -> ListAliasesResponse;
                collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
                update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
                create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
                delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
                list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
            }
        }

        service! {
            impl Points for Service {
                async fn upsert(
                    &self,
                    req: Request<q::UpsertPoints>,
                ) -> Result<Response<q::PointsOperationResponse>, Status> {
                    let mut st = self.state(&req);
                    let r = req.get_ref();
                    if r.update_filter.is_some() {
                        return Err(unimplemented("conditional upserts"));
                    }
                    let c = st
                        .collections
                        .get_mut(&r.collection_name)
                        .ok_or_else(|| missing(&r.collection_name))?;
                    // Validate every point before storing any, as one operation.
                    let mut points = Vec::new();
                    for p in &r.points {
                        let k = key(p.id.as_ref())?;
                        let v = dense(p.vectors.as_ref())?;
                        if v.len() != c.dim {
                            return Err(Status::invalid_argument(format!(
                                "Wrong input: Vector dimension error: expected dim: {}, got {}",
                                c.dim,
                                v.len()
                            )));
                        }
                        points.push((
                            k,
                            Point {
                                id: p.id.clone().unwrap_or_default(),
                                vector: normalised(v),
                                payload: p.payload.clone(),
                            },
                        ));
                    }
                    c.points.extend(points);
                    Ok(Response::new(done()))
                }

                async fn delete(
                    &self,
                    req: Request<q::DeletePoints>,
                ) -> Result<Response<q::PointsOperationResponse>, Status> {
                    let mut st = self.state(&req);
                    let r = req.get_ref();
                    let c = st
                        .collections
                        .get_mut(&r.collection_name)
                        .ok_or_else(|| missing(&r.collection_name))?;
                    for k in ids(r.points.as_ref())? {
                        c.points.remove(&k);
                    }
                    Ok(Response::new(done()))
                }

                async fn get(
                    &self,
                    req: Request<q::GetPoints>,
                ) -> Result<Response<q::GetResponse>, Status> {
                    let st = self.state(&req);
                    let r = req.get_ref();
                    let c = st
                        .collections
                        .get(&r.collection_name)
                        .ok_or_else(|| missing(&r.collection_name))?;
                    let with_payload = enabled(r.with_payload.as_ref())?;
                    let mut result = Vec::new();
                    for id in &r.ids {
                        if let Some(p) = c.points.get(&key(Some(id))?) {
                            result.push(q::RetrievedPoint {
                                id: Some(p.id.clone()),
                                payload: if with_payload { p.payload.clone() } else { HashMap::new() },
                                ..Default::default()
                            });
                        }
                    }
                    Ok(Response::new(q::GetResponse {
                        result,
                        time: 0.0,
                        usage: None,
                    }))
                }

                async fn set_payload(
                    &self,
                    req: Request<q::SetPayloadPoints>,
                ) -> Result<Response<q::PointsOperationResponse>, Status> {
                    let mut st = self.state(&req);
                    let r = req.get_ref();
                    if r.key.is_some() {
                        return Err(unimplemented("nested payload keys"));
                    }
                    let c = st
                        .collections
                        .get_mut(&r.collection_name)
                        .ok_or_else(|| missing(&r.collection_name))?;
                    let keys = ids(r.points_selector.as_ref())?;
                    if let Some(k) = keys.iter().find(|k| !c.points.contains_key(*k)) {
                        return Err(Status::not_found(format!("No point with id {k} found")));
                    }
                    for k in keys {
                        if let Some(p) = c.points.get_mut(&k) {
                            p.payload.extend(r.payload.clone());
                        }
                    }
                    Ok(Response::new(done()))
                }

                async fn create_field_index(
                    &self,
                    req: Request<q::CreateFieldIndexCollection>,
                ) -> Result<Response<q::PointsOperationResponse>, Status> {
                    let mut st = self.state(&req);
                    let r = req.get_ref();
                    if r.field_type != Some(q::FieldType::Keyword as i32) {
                        return Err(unimplemented("indexes other than keyword"));
                    }
                    let c = st
                        .collections
                        .get_mut(&r.collection_name)
                        .ok_or_else(|| missing(&r.collection_name))?;
                    c.indexes.insert(r.field_name.clone());
                    Ok(Response::new(done()))
                }

                async fn query(
                    &self,
                    req: Request<q::QueryPoints>,
                ) -> Result<Response<q::QueryResponse>, Status> {
                    let st = self.state(&req);
                    let r = req.get_ref();
                    if !r.prefetch.is_empty() || r.using.is_some() || r.offset.unwrap_or(0) != 0 {
                        return Err(unimplemented("prefetch, named vectors or offsets"));
                    }
                    let c = st
                        .collections
                        .get(&r.collection_name)
                        .ok_or_else(|| missing(&r.collection_name))?;
                    let v = match r.query.as_ref().and_then(|q| q.variant.as_ref()) {
                        Some(q::query::Variant::Nearest(input)) => match &input.variant {
                            Some(q::vector_input::Variant::Dense(d)) => d.data.clone(),
                            _ => return Err(unimplemented("nearest to anything but a dense vector")),
                        },
                        _ => return Err(unimplemented("queries other than nearest")),
                    };
                    if v.len() != c.dim {
                        return Err(Status::invalid_argument(format!(
                            "Wrong input: Vector dimension error: expected dim: {}, got {}",
                            c.dim,
                            v.len()
                        )));
                    }
                    let v = normalised(v);
                    let with_payload = enabled(r.with_payload.as_ref())?;
                    let mut hits = Vec::new();
                    for p in c.points.values() {
                        if let Some(f) = &r.filter
                            && !passes(f, &p.payload)?
                        {
                            continue;
                        }
                        let score: f32 = v.iter().zip(&p.vector).map(|(a, b)| a * b).sum();
                        if r.score_threshold.is_some_and(|t| score < t) {
                            continue;
                        }
                        hits.push((score, p));
                    }
                    hits.sort_by(|a, b| b.0.total_cmp(&a.0));
                    hits.truncate(r.limit.unwrap_or(10) as usize);
                    let result = hits
                        .into_iter()
                        .map(|(score, p)| q::ScoredPoint {
                            id: Some(p.id.clone()),
                            payload: if with_payload { p.payload.clone() } else { HashMap::new() },
                            score,
                            ..Default::default()
                        })
                        .collect();
                    Ok(Response::new(q::QueryResponse {
                        result,
                        time: 0.0,
                        usage: None,
                    }))
                }
            }
            refused {
                update_vectors(UpdatePointVectors) -> PointsOperationResponse;
                delete_vectors(DeletePointVectors) -> PointsOperationResponse;
                overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
                delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
                clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
                delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
                create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
                delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
                search(SearchPoints) -> SearchResponse;
                search_batch(SearchBatchPoints) -> SearchBatchResponse;
                search_groups(SearchPointGroups) -> SearchGroupsResponse;
                scroll(ScrollPoints) -> ScrollResponse;
                recommend(RecommendPoints) -> RecommendResponse;
                recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
                recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
                discover(DiscoverPoints) -> DiscoverResponse;
                discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
                count(CountPoints) -> CountResponse;
                update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
                query_batch(QueryBatchPoints) -> QueryBatchResponse;
                query_groups(QueryPointGroups) -> QueryGroupsResponse;
                facet(FacetCounts) -> FacetResponse;
                search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
                search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
            }
        }
    }
}
