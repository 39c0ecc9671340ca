//! Unit tests of what the GCP provider computes without a cloud.

use super::*;
use chimera_model::Address;

#[test]
fn labels_escape_what_gcp_refuses_and_decode_exactly() {
    for s in [
        "network.main",
        "Web_Tier",
        "a b/c",
        "über",
        "conformance-network-create-1",
    ] {
        let e = label_enc(s);
        assert!(
            e.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
            "{e}"
        );
        assert_eq!(label_dec(&e), s);
    }
    assert_eq!(label_enc("network.main"), "network_2emain");
}

#[test]
fn zones_follow_the_region_table() {
    assert_eq!(zone_in("us-east1", "a").as_deref(), Some("us-east1-b"));
    assert_eq!(zone_in("us-east1", "").as_deref(), Some("us-east1-b"));
    assert_eq!(zone_in("us-east1", "c").as_deref(), Some("us-east1-d"));
    assert_eq!(zone_in("us-east1", "d"), None);
    assert_eq!(zone_in("us-west1", "a").as_deref(), Some("us-west1-a"));
    assert_eq!(
        zone_letter("us-east1-c"),
        ("us-east1".to_string(), "b".to_string())
    );
}

#[test]
fn names_carry_the_token_hash_and_request_ids_are_uuids() {
    let address = Address::new(Kind::Instance, "Web_Server.0");
    let spec = Spec::Network(chimera_model::kinds::NetworkSpec {
        cidr: "10.0.0.0/16".into(),
    });
    let tags = BTreeMap::new();
    let native = Map::new();
    let req = Request {
        stack: "s",
        address: &address,
        native_region: "us-east1",
        spec: &spec,
        tags: &tags,
        native: &native,
        token: "tok-1",
    };
    let name = name_for(&req);
    assert!(name.starts_with("web-server-0-"), "{name}");
    assert!(name.ends_with(&token_hash("tok-1")));
    assert!(name.len() <= 63);
    let id = request_id("tok-1", "instance");
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert_eq!(id, request_id("tok-1", "instance"), "stable");
    assert_ne!(id, request_id("tok-2", "instance"));
}

#[test]
fn gcp_errors_land_in_the_engines_classes() {
    use chimera_providers::FailureClass as C;
    let class = |code: &str, http: u16| classify(code, http, "m".into()).class();
    assert_eq!(class("rateLimitExceeded", 403), C::Throttled);
    assert_eq!(class("", 429), C::Throttled);
    assert_eq!(class("backendError", 503), C::Retryable);
    assert_eq!(class("RESOURCE_NOT_FOUND", 404), C::NotFound);
    assert_eq!(class("notFound", 404), C::NotFound);
    assert_eq!(class("alreadyExists", 409), C::Conflict);
    assert_eq!(
        class("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", 400),
        C::Conflict
    );
    assert_eq!(class("QUOTA_EXCEEDED", 403), C::Quota);
    assert_eq!(class("ZONE_RESOURCE_POOL_EXHAUSTED", 503), C::Quota);
    assert_eq!(class("invalid", 400), C::Permanent);
    assert!(matches!(
        classify("conditionNotMet", 412, "m".into()),
        ProviderError::Retryable(_)
    ));
}

#[test]
fn a_failed_operation_is_an_error_even_though_it_is_done() {
    use google_cloud_compute_v1::model::operation;
    let mut op = Operation::default();
    op.status = Some(OpStatus::Done);
    op.name = Some("operation-1".into());
    assert_eq!(op_outcome(&op), Ok(()));
    let mut e = operation::error::Errors::default();
    e.code = Some("ZONE_RESOURCE_POOL_EXHAUSTED".into());
    e.message = Some("no room".into());
    let mut err = operation::Error::default();
    err.errors = vec![e];
    op.error = Some(err);
    op.http_error_status_code = Some(503);
    let failed = op_outcome(&op).unwrap_err();
    assert_eq!(failed.class(), chimera_providers::FailureClass::Quota);
    assert!(
        failed.to_string().contains("ZONE_RESOURCE_POOL_EXHAUSTED"),
        "{failed}"
    );
}

#[test]
fn settings_are_read_strictly() {
    let s = GcpSettings::from_settings(
        &serde_json::json!({ "gcp": { "project": "p", "endpoint": "http://127.0.0.1:1/", "poll_interval_ms": 5 } }),
        |_| None,
    )
    .unwrap();
    assert_eq!(s.project.as_deref(), Some("p"));
    assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(s.poll_interval, Duration::from_millis(5));
    let env = GcpSettings::from_settings(&serde_json::json!({}), |k| {
        (k == "GOOGLE_CLOUD_PROJECT").then(|| "from-env".to_string())
    })
    .unwrap();
    assert_eq!(env.project.as_deref(), Some("from-env"));
    let bad = GcpSettings::from_settings(&serde_json::json!({ "gcp": { "zone": "x" } }), |_| None);
    assert!(bad.unwrap_err().contains("providers.gcp.zone"));
}
