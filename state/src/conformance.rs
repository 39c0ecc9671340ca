//! The conformance suite every state store passes (tests call [`run`] on each backend).

use chimera_model::{ContentHash, ProviderName, StateResource};
use serde_json::{Map, json};

use crate::{
    GenerationMeta, GenerationStatus, IntentAction, LockRequest, NewIntent, Outcome, SealedRow,
    StateError, StateStore,
};

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

fn row(addr: &str, cloud_id: &str, cidr: &str) -> StateResource {
    let mut attrs = Map::new();
    attrs.insert("cidr".into(), json!(cidr));
    StateResource {
        address: addr.parse().expect("address"),
        provider: ProviderName::Local,
        region: "us-east".into(),
        native_region: "local-us-east".into(),
        attrs,
        sensitive: vec![],
        hash: ContentHash([7; 32]),
        cloud_id: cloud_id.into(),
        outputs: json!({ "id": cloud_id })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        deps: vec![],
        prevent_destroy: false,
    }
}

fn intent(addr: &str, action: IntentAction) -> NewIntent {
    NewIntent {
        address: addr.parse().expect("address"),
        action,
        client_token: format!("tok-{addr}"),
        payload: None,
    }
}

/// Runs the suite on `store`, using stack names that start with `prefix`.
pub async fn run(store: &dyn StateStore, prefix: &str) -> Result<(), String> {
    let e = |what: &'static str| move |err: StateError| format!("{what}: {err}");
    let stack = format!("{prefix}-conformance");
    ensure!(
        store.stack(&stack).await.map_err(e("stack"))?.is_none(),
        "a new stack must not exist"
    );
    ensure!(
        store
            .current(&stack)
            .await
            .map_err(e("current"))?
            .is_empty(),
        "a new stack has no resources"
    );

    // Locks: one holder; the second is told who holds it; force-unlock frees it.
    let req = LockRequest {
        owner: "alice".into(),
        operation: "apply".into(),
    };
    let lock = store.lock(&stack, &req).await.map_err(e("lock"))?;
    match store
        .lock(
            &stack,
            &LockRequest {
                owner: "bob".into(),
                operation: "apply".into(),
            },
        )
        .await
    {
        Err(StateError::Locked(holder)) => ensure!(
            holder.owner == "alice" && holder.operation == "apply",
            "the holder must be named"
        ),
        other => return Err(format!("a second lock must be refused, got {other:?}")),
    }

    // Generation 1: create two resources.
    let meta = GenerationMeta {
        actor: "alice".into(),
        message: "first".into(),
        ..Default::default()
    };
    let lineage = "lineage-a";
    let g1 = store
        .begin_generation(&lock, 0, lineage, &meta)
        .await
        .map_err(e("begin 1"))?;
    ensure!(g1 == 1, "the first generation is 1, got {g1}");
    let ids = store
        .record_intents(
            &lock,
            g1,
            &[
                intent("network.a", IntentAction::Create),
                intent("network.b", IntentAction::Create),
            ],
        )
        .await
        .map_err(e("intents"))?;
    ensure!(
        ids.len() == 2 && ids[0] < ids[1],
        "intent ids come back in order: {ids:?}"
    );
    ensure!(
        store
            .pending_intents(&stack)
            .await
            .map_err(e("pending"))?
            .len()
            == 2,
        "both intents are pending"
    );
    store
        .record_results(
            &lock,
            g1,
            &[
                (
                    ids[0],
                    Outcome::Put(Box::new(row("network.a", "id-a", "10.1.0.0/16"))),
                ),
                (
                    ids[1],
                    Outcome::Put(Box::new(row("network.b", "id-b", "10.2.0.0/16"))),
                ),
            ],
        )
        .await
        .map_err(e("results"))?;
    ensure!(
        store
            .pending_intents(&stack)
            .await
            .map_err(e("pending"))?
            .is_empty(),
        "recorded intents are no longer pending"
    );
    store
        .finish_generation(&lock, g1, GenerationStatus::Complete)
        .await
        .map_err(e("finish"))?;
    let info = store
        .stack(&stack)
        .await
        .map_err(e("stack"))?
        .ok_or("the stack exists now")?;
    ensure!(
        info.serial == 1 && info.lineage == lineage,
        "stack info {info:?}"
    );

    // Compare-and-swap: a stale expectation and a foreign lineage are refused.
    match store.begin_generation(&lock, 0, lineage, &meta).await {
        Err(StateError::Stale {
            expected: 0,
            found: 1,
            ..
        }) => {}
        other => return Err(format!("a stale generation must be refused, got {other:?}")),
    }
    ensure!(
        store
            .begin_generation(&lock, 1, "lineage-b", &meta)
            .await
            .is_err(),
        "another lineage must be refused"
    );

    // Generation 2: update a, delete b, a failed intent for c.
    let g2 = store
        .begin_generation(&lock, 1, lineage, &meta)
        .await
        .map_err(e("begin 2"))?;
    let ids = store
        .record(
            &lock,
            g2,
            &[],
            &[
                intent("network.a", IntentAction::Update),
                intent("network.b", IntentAction::Delete),
                intent("network.c", IntentAction::Create),
            ],
        )
        .await
        .map_err(e("record"))?;
    store
        .record(
            &lock,
            g2,
            &[
                (
                    ids[0],
                    Outcome::Put(Box::new(row("network.a", "id-a", "10.3.0.0/16"))),
                ),
                (
                    ids[1],
                    Outcome::Remove {
                        address: "network.b".parse().map_err(|x: String| x)?,
                        cloud_id: "id-b".into(),
                    },
                ),
                (ids[2], Outcome::Failed("boom".into())),
            ],
            &[],
        )
        .await
        .map_err(e("record results"))?;
    store
        .finish_generation(&lock, g2, GenerationStatus::Partial)
        .await
        .map_err(e("finish 2"))?;
    let now = store.current(&stack).await.map_err(e("current"))?;
    ensure!(
        now.len() == 1 && now[0].attrs["cidr"] == json!("10.3.0.0/16"),
        "current after g2: {now:?}"
    );
    let then = store
        .resources_at(&stack, 1)
        .await
        .map_err(e("resources_at"))?;
    ensure!(
        then.len() == 2 && then[0].attrs["cidr"] == json!("10.1.0.0/16"),
        "generation 1 as it was: {then:?}"
    );
    ensure!(
        then == vec![
            row("network.a", "id-a", "10.1.0.0/16"),
            row("network.b", "id-b", "10.2.0.0/16")
        ],
        "rows round-trip exactly"
    );
    let history = store.history(&stack).await.map_err(e("history"))?;
    ensure!(
        history.len() == 2 && history[1].status == "partial" && history[1].parent == Some(1),
        "history {history:?}"
    );

    // Create-before-destroy in one generation: the new row survives the old one's removal.
    let g3 = store
        .begin_generation(&lock, 2, lineage, &meta)
        .await
        .map_err(e("begin 3"))?;
    let ids = store
        .record_intents(&lock, g3, &[intent("network.a", IntentAction::Create)])
        .await
        .map_err(e("intents 3"))?;
    store
        .record_results(
            &lock,
            g3,
            &[(
                ids[0],
                Outcome::Put(Box::new(row("network.a", "id-a2", "10.4.0.0/16"))),
            )],
        )
        .await
        .map_err(e("put 3"))?;
    let ids = store
        .record_intents(&lock, g3, &[intent("network.a", IntentAction::Delete)])
        .await
        .map_err(e("intents 3b"))?;
    store
        .record_results(
            &lock,
            g3,
            &[(
                ids[0],
                Outcome::Remove {
                    address: "network.a".parse().map_err(|x: String| x)?,
                    cloud_id: "id-a".into(),
                },
            )],
        )
        .await
        .map_err(e("remove 3"))?;
    let now = store.current(&stack).await.map_err(e("current 3"))?;
    ensure!(
        now.len() == 1 && now[0].cloud_id == "id-a2",
        "the new resource stays: {now:?}"
    );

    // A lost lock stops every write.
    ensure!(
        store
            .force_unlock(&stack)
            .await
            .map_err(e("force_unlock"))?,
        "there was a lock"
    );
    match store
        .record_intents(&lock, g3, &[intent("network.z", IntentAction::Create)])
        .await
    {
        Err(StateError::LockLost(_)) => {}
        other => {
            return Err(format!(
                "a write after losing the lock must fail, got {other:?}"
            ));
        }
    }
    ensure!(
        !store
            .force_unlock(&stack)
            .await
            .map_err(e("force_unlock again"))?,
        "no lock left"
    );
    let again = store.lock(&stack, &req).await.map_err(e("relock"))?;
    store.unlock(&again).await.map_err(e("unlock"))?;
    // The dump takes entries about the stack and its generations, not those of a stack whose
    // name merely starts the same.
    for target in [stack.clone(), format!("{stack}#2"), format!("{stack}2")] {
        store
            .audit("alice", "test", &target, "ok", "conformance")
            .await
            .map_err(e("audit"))?;
    }
    sealed_values(store, &stack).await?;
    moves(store, &format!("{prefix}-moves")).await?;
    dump_and_restore(store, &stack).await
}

/// Renames (`moved` entries): the row moves with its cloud id and outputs, rows referring to
/// it follow in the same transaction, history keeps the old address, and a move that does not
/// fit state (no `from`, or an existing `to`) writes nothing.
async fn moves(store: &dyn StateStore, stack: &str) -> Result<(), String> {
    let e = |what: &'static str| move |err: StateError| format!("{what}: {err}");
    let req = LockRequest {
        owner: "alice".into(),
        operation: "apply".into(),
    };
    let lock = store.lock(stack, &req).await.map_err(e("lock"))?;
    let meta = GenerationMeta::default();
    let g1 = store
        .begin_generation(&lock, 0, "lineage-m", &meta)
        .await
        .map_err(e("begin 1"))?;
    let subnet = |network: &str| {
        let mut r = row("subnet.s", "id-s", "10.1.1.0/24");
        r.attrs.insert(
            "network".into(),
            json!(format!("${{chimera:{network}.id}}")),
        );
        r.deps = vec![network.parse().expect("address")];
        r
    };
    let ids = store
        .record_intents(
            &lock,
            g1,
            &[
                intent("network.old", IntentAction::Create),
                intent("subnet.s", IntentAction::Create),
            ],
        )
        .await
        .map_err(e("intents 1"))?;
    store
        .record_results(
            &lock,
            g1,
            &[
                (
                    ids[0],
                    Outcome::Put(Box::new(row("network.old", "id-old", "10.1.0.0/16"))),
                ),
                (ids[1], Outcome::Put(Box::new(subnet("network.old")))),
            ],
        )
        .await
        .map_err(e("results 1"))?;
    store
        .finish_generation(&lock, g1, GenerationStatus::Complete)
        .await
        .map_err(e("finish 1"))?;

    let g2 = store
        .begin_generation(&lock, g1, "lineage-m", &meta)
        .await
        .map_err(e("begin 2"))?;
    let mut moved = row("network.new", "id-old", "10.1.0.0/16");
    moved.hash = ContentHash([8; 32]);
    let old: chimera_model::Address = "network.old".parse().map_err(|x: String| x)?;
    let new: chimera_model::Address = "network.new".parse().map_err(|x: String| x)?;
    store
        .record_moves(
            &lock,
            g2,
            &[(old.clone(), new.clone())],
            &[moved.clone(), subnet("network.new")],
        )
        .await
        .map_err(e("record_moves"))?;
    let now = store.current(stack).await.map_err(e("current 2"))?;
    ensure!(
        now.len() == 2 && now[0] == moved && now[1] == subnet("network.new"),
        "the row moved with its cloud id and the reference followed: {now:?}"
    );
    let then = store.resources_at(stack, g1).await.map_err(e("at 1"))?;
    ensure!(
        then.len() == 2 && then[0].address == old && then[1] == subnet("network.old"),
        "history keeps the old address: {then:?}"
    );
    // Moves that do not fit state are refused and write nothing.
    let other: chimera_model::Address = "network.other".parse().map_err(|x: String| x)?;
    let taken: chimera_model::Address = "subnet.s".parse().map_err(|x: String| x)?;
    for (from, to) in [(old.clone(), other), (new.clone(), taken)] {
        let mut r = moved.clone();
        r.address = to.clone();
        match store.record_moves(&lock, g2, &[(from, to)], &[r]).await {
            Err(StateError::Invalid(_)) => {}
            other => {
                return Err(format!(
                    "a move that does not fit state must fail, got {other:?}"
                ));
            }
        }
    }
    ensure!(
        store.current(stack).await.map_err(e("current 3"))? == now,
        "a refused move writes nothing"
    );
    store
        .finish_generation(&lock, g2, GenerationStatus::Complete)
        .await
        .map_err(e("finish 2"))?;
    store.unlock(&lock).await.map_err(e("unlock"))
}

/// Sealed sensitive values: written under the stack's lock, replaced by digest, read by digest
/// or all, per stack; a write without the lock is refused.
async fn sealed_values(store: &dyn StateStore, stack: &str) -> Result<(), String> {
    let e = |what: &'static str| move |err: StateError| format!("{what}: {err}");
    let req = LockRequest {
        owner: "alice".into(),
        operation: "keep sealed values".into(),
    };
    let sealed = |d: &str, k: &str, env: &str| SealedRow::new(d.into(), k.into(), env.into());
    let lock = store.lock(stack, &req).await.map_err(e("lock"))?;
    store
        .put_sealed(
            &lock,
            &[
                sealed("d2", "k-old", "envelope-2"),
                sealed("d1", "k-old", "envelope-1"),
            ],
        )
        .await
        .map_err(e("put_sealed"))?;
    store
        .put_sealed(&lock, &[sealed("d1", "k-new", "envelope-1b")])
        .await
        .map_err(e("put_sealed again"))?;
    store.unlock(&lock).await.map_err(e("unlock"))?;
    let all = store.sealed(stack, None).await.map_err(e("sealed"))?;
    ensure!(
        all.len() == 2
            && all[0].digest == "d1"
            && all[0].key_id == "k-new"
            && all[0].envelope == "envelope-1b"
            && all[1].digest == "d2",
        "sealed values by digest, the replaced one new: {all:?}"
    );
    let some = store
        .sealed(stack, Some(&["d2".to_string(), "d9".to_string()][..]))
        .await
        .map_err(e("sealed d2"))?;
    ensure!(
        some.len() == 1 && some[0].envelope == "envelope-2",
        "by digest: {some:?}"
    );
    ensure!(
        store
            .sealed(&format!("{stack}-other"), None)
            .await
            .map_err(e("sealed other"))?
            .is_empty(),
        "sealed values belong to their stack"
    );
    match store.put_sealed(&lock, &[sealed("d3", "k", "e")]).await {
        Err(StateError::LockLost(_)) => Ok(()),
        other => Err(format!(
            "keeping sealed values without the lock must fail, got {other:?}"
        )),
    }
}

/// A dump holds the whole stack; restoring it (under another name) gives the same rows, and
/// restoring over an existing stack writes nothing.
async fn dump_and_restore(store: &dyn StateStore, stack: &str) -> Result<(), String> {
    let e = |what: &'static str| move |err: StateError| format!("{what}: {err}");
    ensure!(
        store
            .dump(&format!("{stack}-missing"))
            .await
            .map_err(e("dump"))?
            .is_none(),
        "no dump of a missing stack"
    );
    let dump = store
        .dump(stack)
        .await
        .map_err(e("dump"))?
        .ok_or("the stack dumps")?;
    ensure!(
        dump.lineage == "lineage-a"
            && dump.generations.len() == 3
            && dump.intents.len() == 7
            && dump.audit.len() == 2
            && dump.resources.len() == 4
            && dump.sealed.len() == 2,
        "dump of {stack}: {} generations, {} intents, {} audit entries, {} rows, {} sealed values",
        dump.generations.len(),
        dump.intents.len(),
        dump.audit.len(),
        dump.resources.len(),
        dump.sealed.len()
    );
    match store.restore(&dump).await {
        Err(StateError::Invalid(m)) if m.contains("already exists") => {}
        other => {
            return Err(format!(
                "restoring over a stack must be refused, got {other:?}"
            ));
        }
    }
    ensure!(
        store.dump(stack).await.map_err(e("dump again"))?.as_ref() == Some(&dump),
        "a refused restore changes nothing"
    );
    let mut copy = dump.clone();
    copy.name = format!("{stack}-copy");
    for a in &mut copy.audit {
        a.target = a.target.replacen(stack, &copy.name, 1);
    }
    store.restore(&copy).await.map_err(e("restore"))?;
    ensure!(
        store
            .dump(&copy.name)
            .await
            .map_err(e("dump copy"))?
            .as_ref()
            == Some(&copy),
        "a restored stack dumps as it was"
    );
    for serial in 1..=3 {
        ensure!(
            store.resources_at(stack, serial).await.map_err(e("at"))?
                == store
                    .resources_at(&copy.name, serial)
                    .await
                    .map_err(e("at copy"))?,
            "generation {serial} differs after restore"
        );
    }
    ensure!(
        store.history(stack).await.map_err(e("history"))?
            == store.history(&copy.name).await.map_err(e("history copy"))?,
        "history differs after restore"
    );
    let names: Vec<String> = store
        .stacks()
        .await
        .map_err(e("stacks"))?
        .into_iter()
        .map(|s| s.name)
        .collect();
    ensure!(
        names.contains(&stack.to_string()) && names.contains(&copy.name),
        "stacks lists both: {names:?}"
    );
    Ok(())
}
