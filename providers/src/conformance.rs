//! The conformance suite every provider passes (tests call [`run`] with each provider).
//!
//! It checks the contract the engine relies on: creates are idempotent by token, tokens are
//! findable and tags are set, reads see what was written, batched reads (`observe`) see the same
//! in the order asked, updates apply in place, deletes are idempotent, and absence is reported
//! as absence.

use chimera_model::{Address, Kind};
use serde_json::{Map, Value, json};

use crate::{Provider, Request, TAG_ADDRESS, TAG_STACK, TAG_TOKEN};

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

/// Runs the suite in `native_region`, on a stack name unique to this run.
pub async fn run(p: &dyn Provider, native_region: &str, stack: &str) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: crate::ProviderError| format!("{what}: {err}")
    };
    let net_addr = Address::new(Kind::Network, "conformance");
    let net_attrs = attrs(json!({ "cidr": "10.42.0.0/16", "tags": { "suite": "conformance" } }));
    let req = Request {
        stack,
        address: &net_addr,
        native_region,
        attrs: &net_attrs,
        token: "conf-token-net-1",
    };
    let net = p.create(&req).await.map_err(e("create network"))?;
    ensure!(
        net.outputs.get("id").and_then(Value::as_str) == Some(net.cloud_id.as_str()),
        "outputs.id must be the cloud id"
    );
    let again = p.create(&req).await.map_err(e("create network again"))?;
    ensure!(
        again.cloud_id == net.cloud_id,
        "a repeated create with the same token made a second resource"
    );
    for (k, v) in [
        (TAG_STACK, stack),
        (TAG_ADDRESS, "network.conformance"),
        (TAG_TOKEN, "conf-token-net-1"),
        ("suite", "conformance"),
    ] {
        ensure!(
            net.tags.get(k).map(String::as_str) == Some(v),
            "tag {k} should be {v}, got {:?}",
            net.tags.get(k)
        );
    }
    let found = p
        .find_by_token(Kind::Network, "conf-token-net-1")
        .await
        .map_err(e("find_by_token"))?;
    ensure!(
        found.map(|f| f.cloud_id) == Some(net.cloud_id.clone()),
        "find_by_token must find the created resource"
    );
    ensure!(
        p.find_by_token(Kind::Network, "conf-token-never-used")
            .await
            .map_err(e("find_by_token absent"))?
            .is_none(),
        "an unused token must be absent"
    );

    let read = p
        .read(Kind::Network, &net.cloud_id)
        .await
        .map_err(e("read"))?
        .ok_or("read after create found nothing")?;
    ensure!(
        read.attrs.get("cidr") == Some(&json!("10.42.0.0/16")),
        "read must return the written cidr, got {:?}",
        read.attrs.get("cidr")
    );

    let sub_addr = Address::new(Kind::Subnet, "conformance");
    let sub_attrs = attrs(
        json!({ "network": net.cloud_id, "cidr": "10.42.1.0/24", "zone": "a", "public": false, "tags": {} }),
    );
    let sreq = Request {
        stack,
        address: &sub_addr,
        native_region,
        attrs: &sub_attrs,
        token: "conf-token-subnet-1",
    };
    let sub = p.create(&sreq).await.map_err(e("create subnet"))?;

    let new_attrs = attrs(
        json!({ "network": net.cloud_id, "cidr": "10.42.1.0/24", "zone": "a", "public": true, "tags": { "v": "2" } }),
    );
    let ureq = Request {
        attrs: &new_attrs,
        token: "conf-token-subnet-2",
        ..sreq.clone()
    };
    let updated = p.update(&ureq, &sub.cloud_id).await.map_err(e("update"))?;
    ensure!(
        updated.cloud_id == sub.cloud_id,
        "an update must keep the id"
    );
    let read = p
        .read(Kind::Subnet, &sub.cloud_id)
        .await
        .map_err(e("read after update"))?
        .ok_or("subnet vanished")?;
    ensure!(
        read.attrs.get("public") == Some(&json!(true)),
        "update must be visible to read"
    );
    ensure!(
        read.tags.get("v").map(String::as_str) == Some("2"),
        "updated tags must be visible"
    );

    // Batched reads: what `read` sees, in the order asked, and absence as `None`.
    let missing = format!("{}-missing", sub.cloud_id);
    let observed = p
        .observe(&[
            (Kind::Subnet, sub.cloud_id.clone()),
            (Kind::Network, missing),
            (Kind::Network, net.cloud_id.clone()),
        ])
        .await
        .map_err(e("observe"))?;
    ensure!(
        observed.len() == 3,
        "observe must answer every item, answered {}",
        observed.len()
    );
    ensure!(
        observed[0].as_ref() == Some(&read),
        "observe must see what read sees, got {:?}",
        observed[0]
    );
    ensure!(observed[1].is_none(), "an absent id must observe as None");
    ensure!(
        observed[2].as_ref().map(|o| o.cloud_id.as_str()) == Some(net.cloud_id.as_str()),
        "observe must answer in the order asked"
    );

    let managed = p.list_managed(stack).await.map_err(e("list_managed"))?;
    ensure!(
        managed.len() == 2,
        "list_managed should find 2 resources, found {}",
        managed.len()
    );

    p.delete(Kind::Subnet, &sub.cloud_id)
        .await
        .map_err(e("delete subnet"))?;
    p.delete(Kind::Network, &net.cloud_id)
        .await
        .map_err(e("delete network"))?;
    p.delete(Kind::Network, &net.cloud_id)
        .await
        .map_err(e("delete network twice"))?;
    ensure!(
        p.read(Kind::Network, &net.cloud_id)
            .await
            .map_err(e("read deleted"))?
            .is_none(),
        "a deleted resource must read as absent"
    );
    ensure!(
        p.find_by_token(Kind::Network, "conf-token-net-1")
            .await
            .map_err(e("find deleted"))?
            .is_none(),
        "a deleted resource's token must be absent"
    );
    ensure!(
        p.list_managed(stack)
            .await
            .map_err(e("list after delete"))?
            .is_empty(),
        "nothing may remain after deletes"
    );
    Ok(())
}
