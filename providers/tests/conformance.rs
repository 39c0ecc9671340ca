use chimera_providers::local::{Knobs, LocalCloud};

#[tokio::test]
async fn local_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = LocalCloud::open(&dir.path().join("cloud.db"), Knobs::default())
        .await
        .unwrap();
    chimera_providers::conformance::run(&cloud, "local-us-east", "conformance-stack")
        .await
        .unwrap();
}

#[tokio::test]
async fn local_passes_under_throttling_and_latency_with_retries() {
    // Throttled calls are retried by `with_retries`; the suite itself calls the provider
    // directly, so wrap the knobs' effect through a retrying provider.
    let dir = tempfile::tempdir().unwrap();
    let knobs = Knobs {
        latency: std::time::Duration::from_millis(2),
        throttle_rate: 0.3,
        ..Knobs::default()
    };
    let cloud = LocalCloud::open(&dir.path().join("cloud.db"), knobs)
        .await
        .unwrap();
    let retrying = chimera_providers::Retrying(cloud);
    chimera_providers::conformance::run(&retrying, "local-us-east", "throttled")
        .await
        .unwrap();
}

#[tokio::test]
async fn injected_failures_are_reported_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let knobs = Knobs {
        failure_rate: 1.0,
        ..Knobs::default()
    };
    let cloud = LocalCloud::open(&dir.path().join("cloud.db"), knobs)
        .await
        .unwrap();
    let retrying = chimera_providers::Retrying(cloud);
    let err = chimera_providers::conformance::run(&retrying, "local-us-east", "failing")
        .await
        .unwrap_err();
    assert!(err.contains("InjectedFailure"), "{err}");
}
