//! The contract every [`Memory`] backend passes: the behaviour the agents rely on, checked the
//! same way on SQLite, on Qdrant and on the tests' fake Qdrant.
//!
//! A [`Check`] is one behaviour; [`check`] runs it on a memory and returns every expectation it
//! broke, not just the first. Test binaries list one test per backend and check
//! (`sqlite::filters`, `qdrant_fake::outcomes`), so a broken backend fails many tests at once
//! and each names what broke.
//!
//! Every record, stack and resource kind the suite writes starts with the namespace it is
//! given, and every recall filters on them, so checks may share a memory — even a real server
//! that keeps records of earlier runs — as long as each run uses a new namespace.
//!
//! What is checked:
//! - `roundtrip`: what is remembered is what `get` returns, every field, optional ones unset
//!   too; an unknown id is `None`;
//! - `ids`: `remember` returns the record's id; a record without one gets a new id, a
//!   different one each time, even for the same content;
//! - `upsert`: remembering an id again replaces the record (text, outcome, even the kind), and
//!   recalls return it once, as it is now;
//! - `closest`: the record whose text is the query comes first with a score of 1; scores never
//!   increase down the list;
//! - `filters`: stack, kind, resource kind and their combinations return exactly the records
//!   that match;
//! - `outcomes`: among equally similar records, merged ranks above opened, which ranks above
//!   rejected and closed, by the documented weights;
//! - `set_outcome`: a new outcome is kept (and only it changes) and moves the record in the
//!   ranking; an unknown id is reported and nothing is created;
//! - `limit`: `k` caps the results, a smaller `k` returns the head of a larger one, `k = 0`
//!   returns nothing;
//! - `empty`: a stack nothing was written to recalls nothing, whatever the filter.

use std::collections::BTreeSet;
use std::fmt;

use super::{BONUS, Filter, Memory, PENALTY, Record, RecordKind};

/// One behaviour of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    Roundtrip,
    Ids,
    Upsert,
    Closest,
    Filters,
    Outcomes,
    SetOutcome,
    Limit,
    Empty,
}

impl Check {
    pub const ALL: [Check; 9] = [
        Check::Roundtrip,
        Check::Ids,
        Check::Upsert,
        Check::Closest,
        Check::Filters,
        Check::Outcomes,
        Check::SetOutcome,
        Check::Limit,
        Check::Empty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Roundtrip => "roundtrip",
            Check::Ids => "ids",
            Check::Upsert => "upsert",
            Check::Closest => "closest",
            Check::Filters => "filters",
            Check::Outcomes => "outcomes",
            Check::SetOutcome => "set_outcome",
            Check::Limit => "limit",
            Check::Empty => "empty",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs one check on `memory`, writing only under namespace `ns` (letters, digits and `-`;
/// new for each run on a memory that persists). `Err` holds every expectation it broke.
pub async fn check(memory: &dyn Memory, check: Check, ns: &str) -> Result<(), Vec<String>> {
    let mut cx = Cx {
        memory,
        ns: format!("{ns}-{check}"),
        failures: Vec::new(),
    };
    match check {
        Check::Roundtrip => cx.roundtrip().await,
        Check::Ids => cx.ids_check().await,
        Check::Upsert => cx.upsert().await,
        Check::Closest => cx.closest().await,
        Check::Filters => cx.filters().await,
        Check::Outcomes => cx.outcomes().await,
        Check::SetOutcome => cx.set_outcome().await,
        Check::Limit => cx.limit().await,
        Check::Empty => cx.empty().await,
    }
    if cx.failures.is_empty() {
        Ok(())
    } else {
        Err(cx.failures)
    }
}

/// Runs every check; returns the failed ones with what they broke.
pub async fn check_all(memory: &dyn Memory, ns: &str) -> Vec<(Check, Vec<String>)> {
    let mut out = Vec::new();
    for c in Check::ALL {
        if let Err(f) = check(memory, c, ns).await {
            out.push((c, f));
        }
    }
    out
}

/// Texts about unrelated things: any embedder worth using puts each nearest to itself.
const RESIZE: &str = "resize the web instance from t3.small to t3.large for the checkout traffic";
const ENCRYPT: &str =
    "the data volume drifted: encryption was turned off in the console, re-enabled it";
const PORT: &str = "open port 443 on the firewall so the load balancer reaches the api servers";
const BUCKET: &str =
    "delete the unused staging snapshots older than ninety days to cut storage cost";
const SUBNET: &str =
    "add a private subnet in the second availability zone for the database replicas";

const EPS: f32 = 1e-3;

struct Cx<'a> {
    memory: &'a dyn Memory,
    ns: String,
    failures: Vec<String>,
}

impl Cx<'_> {
    fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }

    fn expect(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fail(msg());
        }
    }

    fn id(&self, short: &str) -> String {
        format!("{}-{short}", self.ns)
    }

    fn stack(&self, short: &str) -> String {
        format!("{}-{short}", self.ns)
    }

    /// The short name of a record of this check, for messages.
    fn short<'r>(&self, id: &'r str) -> &'r str {
        id.strip_prefix(&format!("{}-", self.ns)).unwrap_or(id)
    }

    fn shorts(&self, hits: &[(Record, f32)]) -> Vec<String> {
        hits.iter()
            .map(|(r, s)| format!("{} ({s:.3})", self.short(&r.id)))
            .collect()
    }

    fn record(&self, short: &str, kind: RecordKind, text: &str, outcome: &str) -> Record {
        Record {
            id: self.id(short),
            stack: self.stack("main"),
            kind,
            resource_kind: Some(self.stack("instance")),
            text: text.to_string(),
            outcome: outcome.to_string(),
            pr: None,
            created_unix: 1_700_000_000,
        }
    }

    /// Remembers `rec`; its id as `remember` returned it.
    async fn remember(&mut self, rec: Record) -> Option<String> {
        let id = rec.id.clone();
        match self.memory.remember(rec).await {
            Ok(got) => {
                let short = self.short(&id).to_string();
                self.expect(id.is_empty() || got == id, || {
                    format!("remember `{short}` must return its id, returned `{got}`")
                });
                Some(got)
            }
            Err(e) => {
                self.fail(format!("remember `{}`: {e}", self.short(&id)));
                None
            }
        }
    }

    async fn recall(&mut self, query: &str, filter: &Filter, k: usize) -> Vec<(Record, f32)> {
        match self.memory.recall(query, filter, k).await {
            Ok(hits) => {
                let foreign: Vec<&str> = hits
                    .iter()
                    .filter(|(r, _)| !filter.matches(r))
                    .map(|(r, _)| r.id.as_str())
                    .collect();
                if !foreign.is_empty() {
                    self.fail(format!(
                        "recall with {filter:?} returned records that do not match it: {foreign:?}"
                    ));
                }
                hits
            }
            Err(e) => {
                self.fail(format!("recall with {filter:?}: {e}"));
                Vec::new()
            }
        }
    }

    async fn get(&mut self, id: &str) -> Option<Record> {
        match self.memory.get(id).await {
            Ok(r) => r,
            Err(e) => {
                self.fail(format!("get `{}`: {e}", self.short(id)));
                None
            }
        }
    }

    async fn set(&mut self, id: &str, outcome: &str) -> Option<bool> {
        match self.memory.set_outcome(id, outcome).await {
            Ok(found) => Some(found),
            Err(e) => {
                self.fail(format!("set_outcome `{}` {outcome}: {e}", self.short(id)));
                None
            }
        }
    }

    fn ids(&self, hits: &[(Record, f32)]) -> BTreeSet<String> {
        hits.iter()
            .map(|(r, _)| self.short(&r.id).to_string())
            .collect()
    }

    fn descending(&mut self, what: &str, hits: &[(Record, f32)]) {
        let ok = hits.windows(2).all(|w| w[0].1 >= w[1].1);
        let list = self.shorts(hits);
        self.expect(ok, || format!("{what}: scores must not increase: {list:?}"));
    }

    async fn roundtrip(&mut self) {
        let full = Record {
            id: self.id("full"),
            stack: self.stack("main"),
            kind: RecordKind::Incident,
            resource_kind: Some(self.stack("volume")),
            text: "drift on «data» volume:\nencryption off → re-enabled, 100% healed".into(),
            outcome: "healed".into(),
            pr: Some(4_242),
            created_unix: 1_754_000_123,
        };
        let bare = Record {
            id: self.id("bare"),
            stack: self.stack("main"),
            kind: RecordKind::Outcome,
            resource_kind: None,
            text: "rolled back generation 12".into(),
            outcome: "failed".into(),
            pr: None,
            created_unix: 0,
        };
        for rec in [full, bare] {
            self.remember(rec.clone()).await;
            let got = self.get(&rec.id).await;
            self.expect(got.as_ref() == Some(&rec), || {
                format!("get must return what was remembered: expected {rec:?}, got {got:?}")
            });
        }
        let unknown = self.id("unknown");
        let got = self.get(&unknown).await;
        self.expect(got.is_none(), || {
            format!("get of an unknown id must be None, got {got:?}")
        });
    }

    async fn ids_check(&mut self) {
        let given = self.record("given", RecordKind::Proposal, RESIZE, "opened");
        self.remember(given).await;
        let fresh = Record {
            id: String::new(),
            ..self.record("", RecordKind::Incident, ENCRYPT, "healed")
        };
        let a = self.remember(fresh.clone()).await;
        let b = self.remember(fresh.clone()).await;
        let (Some(a), Some(b)) = (a, b) else {
            return;
        };
        self.expect(!a.trim().is_empty() && a != b, || {
            format!("records without an id must get a new id each time, got `{a}` and `{b}`")
        });
        for id in [&a, &b] {
            let got = self.get(id).await;
            let want = Record {
                id: id.clone(),
                ..fresh.clone()
            };
            self.expect(got.as_ref() == Some(&want), || {
                format!("get of an assigned id must return the record with that id: expected {want:?}, got {got:?}")
            });
        }
        let filter = Filter::stack(self.stack("main")).kind(RecordKind::Incident);
        let hits = self.recall(ENCRYPT, &filter, 10).await;
        let got: BTreeSet<&str> = hits.iter().map(|(r, _)| r.id.as_str()).collect();
        let want = BTreeSet::from([a.as_str(), b.as_str()]);
        self.expect(got == want, || {
            format!(
                "both records with assigned ids must be recalled: expected {want:?}, got {got:?}"
            )
        });
    }

    async fn upsert(&mut self) {
        let first = self.record("u", RecordKind::Proposal, RESIZE, "opened");
        self.remember(first.clone()).await;
        let second = Record {
            kind: RecordKind::Incident,
            resource_kind: Some(self.stack("volume")),
            text: ENCRYPT.into(),
            outcome: "merged".into(),
            pr: Some(7),
            created_unix: 1_700_000_500,
            ..first.clone()
        };
        self.remember(second.clone()).await;
        let got = self.get(&second.id).await;
        self.expect(got.as_ref() == Some(&second), || {
            format!("a second remember must replace the record: expected {second:?}, got {got:?}")
        });
        let all = Filter::stack(self.stack("main"));
        let hits = self.recall(ENCRYPT, &all, 10).await;
        let list = self.shorts(&hits);
        self.expect(hits.len() == 1, || {
            format!("a replaced record must be recalled once, got {list:?}")
        });
        if let Some((r, _)) = hits.first() {
            self.expect(*r == second, || {
                format!("a recall must return the record as it is now, got {r:?}")
            });
        }
        let old_kind = self
            .recall(RESIZE, &all.clone().kind(RecordKind::Proposal), 10)
            .await;
        let list = self.shorts(&old_kind);
        self.expect(old_kind.is_empty(), || {
            format!(
                "a record whose kind changed must not be recalled under the old kind, got {list:?}"
            )
        });
    }

    async fn closest(&mut self) {
        for (short, text) in [
            ("resize", RESIZE),
            ("encrypt", ENCRYPT),
            ("port", PORT),
            ("bucket", BUCKET),
        ] {
            let rec = self.record(short, RecordKind::Proposal, text, "opened");
            self.remember(rec).await;
        }
        let filter = Filter::stack(self.stack("main"));
        for (short, text) in [("encrypt", ENCRYPT), ("port", PORT), ("resize", RESIZE)] {
            let hits = self.recall(text, &filter, 4).await;
            let list = self.shorts(&hits);
            self.expect(hits.len() == 4, || {
                format!("4 records were remembered, recall returned {list:?}")
            });
            let first = hits
                .first()
                .map(|(r, s)| (self.short(&r.id).to_string(), *s));
            self.expect(
                first.as_ref().is_some_and(|(id, s)| id == short && (s - 1.0).abs() < EPS),
                || format!("the record whose text is the query must come first with score 1 (an opened record's similarity to itself), got {list:?}"),
            );
            self.descending("closest", &hits);
        }
        let hits = self.recall("volume encryption drifted", &filter, 2).await;
        let first = hits.first().map(|(r, _)| self.short(&r.id).to_string());
        let list = self.shorts(&hits);
        self.expect(first.as_deref() == Some("encrypt"), || {
            format!("a query sharing words with one record must find it first, got {list:?}")
        });
    }

    async fn filters(&mut self) {
        let volume = self.stack("volume");
        let instance = self.stack("instance");
        let (main, other) = (self.stack("main"), self.stack("other"));
        let rows = [
            ("p1", &main, RecordKind::Proposal, Some(&volume)),
            ("p2", &main, RecordKind::Incident, Some(&volume)),
            ("p3", &main, RecordKind::Proposal, Some(&instance)),
            ("p4", &other, RecordKind::Proposal, Some(&volume)),
            ("p5", &main, RecordKind::Outcome, None),
        ];
        for (short, stack, kind, rk) in rows {
            let rec = Record {
                stack: stack.clone(),
                resource_kind: rk.cloned(),
                ..self.record(short, kind, ENCRYPT, "opened")
            };
            self.remember(rec).await;
        }
        let cases = [
            (Filter::stack(&main), "p1 p2 p3 p5"),
            (Filter::stack(&other), "p4"),
            (Filter::stack(&main).kind(RecordKind::Proposal), "p1 p3"),
            (Filter::stack(&main).kind(RecordKind::Incident), "p2"),
            (Filter::stack(&main).kind(RecordKind::Outcome), "p5"),
            (Filter::stack(&other).kind(RecordKind::Incident), ""),
            (Filter::stack(&main).resource_kind(&volume), "p1 p2"),
            (
                Filter::stack(&main)
                    .kind(RecordKind::Proposal)
                    .resource_kind(&volume),
                "p1",
            ),
            (Filter::default().resource_kind(&volume), "p1 p2 p4"),
            (
                Filter::default()
                    .resource_kind(&volume)
                    .kind(RecordKind::Proposal),
                "p1 p4",
            ),
            (Filter::default().resource_kind(&instance), "p3"),
        ];
        for (filter, want) in cases {
            let hits = self.recall(ENCRYPT, &filter, 10).await;
            let got = self.ids(&hits);
            let want: BTreeSet<String> = want.split_whitespace().map(str::to_string).collect();
            self.expect(got == want, || {
                format!("recall with {filter:?} must return {want:?}, got {got:?}")
            });
        }
    }

    async fn outcomes(&mut self) {
        for (short, outcome) in [
            ("rejected", "rejected"),
            ("closed", "closed"),
            ("opened", "opened"),
            ("merged", "merged"),
        ] {
            let rec = self.record(short, RecordKind::Proposal, PORT, outcome);
            self.remember(rec).await;
        }
        let filter = Filter::stack(self.stack("main"));
        let hits = self.recall(PORT, &filter, 10).await;
        let order: Vec<String> = hits
            .iter()
            .map(|(r, _)| self.short(&r.id).to_string())
            .collect();
        let list = self.shorts(&hits);
        self.expect(
            order.len() == 4 && order[0] == "merged" && order[1] == "opened",
            || format!("equally similar records rank merged, opened, then rejected and closed; got {list:?}"),
        );
        self.expect(
            order
                .iter()
                .skip(2)
                .all(|id| id == "rejected" || id == "closed"),
            || format!("rejected and closed records must rank last, got {list:?}"),
        );
        self.descending("outcomes", &hits);
        let score = |id: &str| {
            hits.iter()
                .find(|(r, _)| self.short(&r.id) == id)
                .map(|(_, s)| *s)
        };
        if let (Some(o), Some(m), Some(r), Some(c)) = (
            score("opened"),
            score("merged"),
            score("rejected"),
            score("closed"),
        ) {
            self.expect((m - o * BONUS).abs() < EPS, || {
                format!("a merged record scores {BONUS} × its similarity: opened {o}, merged {m}")
            });
            for (what, s) in [("rejected", r), ("closed", c)] {
                self.expect((s - o * PENALTY).abs() < EPS, || {
                    format!(
                        "a {what} record scores {PENALTY} × its similarity: opened {o}, {what} {s}"
                    )
                });
            }
        }
    }

    async fn set_outcome(&mut self) {
        let a = self.record("a", RecordKind::Proposal, BUCKET, "opened");
        let b = Record {
            created_unix: a.created_unix - 1,
            ..self.record("b", RecordKind::Proposal, BUCKET, "opened")
        };
        self.remember(a.clone()).await;
        self.remember(b.clone()).await;
        let filter = Filter::stack(self.stack("main"));
        let first = |cx: &Cx, hits: &[(Record, f32)]| {
            hits.first()
                .map(|(r, _)| cx.short(&r.id).to_string())
                .unwrap_or_default()
        };

        let found = self.set(&a.id, "rejected").await;
        self.expect(found == Some(true) || found.is_none(), || {
            "set_outcome of a remembered record must report it found".to_string()
        });
        let got = self.get(&a.id).await;
        let want = Record {
            outcome: "rejected".into(),
            ..a.clone()
        };
        self.expect(got.as_ref() == Some(&want), || {
            format!("set_outcome must change the outcome and nothing else: expected {want:?}, got {got:?}")
        });
        let hits = self.recall(BUCKET, &filter, 2).await;
        let (top, list) = (first(self, &hits), self.shorts(&hits));
        self.expect(top == "b", || {
            format!("a record set to rejected must rank below an equal opened one, got {list:?}")
        });

        self.set(&a.id, "merged").await;
        let hits = self.recall(BUCKET, &filter, 2).await;
        let (top, list) = (first(self, &hits), self.shorts(&hits));
        self.expect(top == "a", || {
            format!("a record set to merged must rank above an equal opened one, got {list:?}")
        });

        let unknown = self.id("unknown");
        let found = self.set(&unknown, "merged").await;
        self.expect(found == Some(false) || found.is_none(), || {
            "set_outcome of an unknown id must report it not found".to_string()
        });
        let got = self.get(&unknown).await;
        self.expect(got.is_none(), || {
            format!("set_outcome of an unknown id must create nothing, got {got:?}")
        });
    }

    async fn limit(&mut self) {
        for (i, text) in [RESIZE, ENCRYPT, PORT, BUCKET, SUBNET]
            .into_iter()
            .enumerate()
        {
            let rec = self.record(&format!("r{i}"), RecordKind::Proposal, text, "opened");
            self.remember(rec).await;
        }
        let filter = Filter::stack(self.stack("main"));
        let query = "the firewall port for the api servers";
        let five = self.recall(query, &filter, 5).await;
        let ten = self.recall(query, &filter, 10).await;
        let two = self.recall(query, &filter, 2).await;
        let one = self.recall(query, &filter, 1).await;
        let zero = self.recall(query, &filter, 0).await;
        let lens = [five.len(), ten.len(), two.len(), one.len(), zero.len()];
        self.expect(lens == [5, 5, 2, 1, 0], || {
            format!(
                "k = 5, 10, 2, 1, 0 over 5 records must return 5, 5, 2, 1, 0 records, got {lens:?}"
            )
        });
        let head = |hits: &[(Record, f32)], n: usize| -> Vec<String> {
            hits.iter().take(n).map(|(r, _)| r.id.clone()).collect()
        };
        let (h5, h2, h1) = (head(&five, 2), head(&two, 2), head(&one, 1));
        self.expect(h2 == h5, || {
            format!("k = 2 must return the head of k = 5: {h2:?} vs {h5:?}")
        });
        self.expect(h1 == head(&five, 1), || {
            format!("k = 1 must return the head of k = 5: {h1:?}")
        });
        let first = five.first().map(|(r, _)| self.short(&r.id).to_string());
        let list = self.shorts(&five);
        self.expect(first.as_deref() == Some("r2"), || {
            format!("the firewall record must come first, got {list:?}")
        });
    }

    async fn empty(&mut self) {
        let nothing = self.stack("nothing");
        let filters = [
            Filter::stack(&nothing),
            Filter::stack(&nothing).kind(RecordKind::Incident),
            Filter::default().resource_kind(self.stack("volume")),
        ];
        for filter in filters {
            let hits = self.recall(ENCRYPT, &filter, 10).await;
            let list = self.shorts(&hits);
            self.expect(hits.is_empty(), || {
                format!("nothing was remembered under {filter:?}, recall returned {list:?}")
            });
        }
        let empty_query = self.recall("", &Filter::stack(&nothing), 10).await;
        self.expect(empty_query.is_empty(), || {
            "an empty query over nothing must return nothing".to_string()
        });
    }
}
