//! State rows as a damaged fixture can hold them (the fuzzer's findings, issue #19): the
//! planner's functions end, and say what they can, instead of looping or panicking.

use chimera_model::StateResource;
use chimera_plans::plan::{self, Prior};
use serde_json::json;

fn row(address: &str, deps: &[&str]) -> serde_json::Value {
    json!({
        "address": address,
        "provider": "local",
        "region": "us-east",
        "native_region": "local-us-east",
        "attrs": { "cidr": "10.0.0.0/16", "tags": {} },
        "sensitive": [],
        "hash": "655737fa7936f3c21b72fb4c2ce3c03b324cf473edcfa83055c8e813351848b8",
        "cloud_id": "",
        "outputs": {},
        "deps": deps,
    })
}

/// Fuzz finding 8073 (seed 19): a fixture whose `instance.db` row was renamed `network.main`,
/// so one address has two rows and they depend on each other through `subnet.a`. The
/// rollback order looped forever: it counted rows, but orders distinct addresses.
#[test]
fn rollback_order_ends_when_rows_repeat_an_address_in_a_cycle() {
    let rows: Vec<StateResource> = serde_json::from_value(json!([
        row("network.main", &[]),
        row("subnet.a", &["network.main"]),
        row("instance.app", &["subnet.a", "instance.db"]),
        row("network.main", &["subnet.a"]),
    ]))
    .unwrap();
    let targets = plan::rollback_targets(&rows);
    let mut addresses: Vec<String> = targets.iter().map(|t| t.address.to_string()).collect();
    addresses.sort();
    assert_eq!(addresses, ["instance.app", "network.main", "subnet.a"]);

    // Planned against the same rows (as `chimera test` and the fuzzer do), it ends too.
    let prior = Prior {
        lineage: Some("l".into()),
        serial: 3,
        resources: &rows,
    };
    let targets = plan::heal_targets(&rows, None);
    assert_eq!(targets.len(), 3);
    match plan::plan_targets(
        targets,
        "s",
        &prior,
        chimera_model::ContentHash([0; 32]),
        false,
    ) {
        Ok(p) => assert_eq!(p.changes.len(), 3, "{:?}", p.changes),
        Err(ds) => assert!(
            ds.iter()
                .all(|d| d.address.is_some() || d.location.is_some()),
            "{ds:?}"
        ),
    }
}
