//! `chimera serve` as a process: drift injected with `chimera local mutate` (an attribute
//! changed, an instance deleted, a firewall rule added, a volume detached) is healed within two
//! ticks in `auto` and only recorded in `report`; `/metrics` is scraped and parsed as drift is
//! found and healed; SIGTERM ends it with exit 0; a non-loopback address without a token is
//! refused.

mod common;
use common::serve::{Daemon, chimera, ok, samples, webapp_dir};

fn webapp() -> tempfile::TempDir {
    let dir = webapp_dir();
    ok(&chimera(dir.path(), &["apply", ".", "-y"]));
    for args in [
        &[
            "local",
            "mutate",
            "subnet.public",
            "--set",
            "public=false",
            ".",
        ][..],
        &["local", "mutate", "instance.web-1", "--delete", "."][..],
        &[
            "local",
            "mutate",
            "volume.data",
            "--set",
            "instance=null",
            ".",
        ][..],
        &[
            "local",
            "mutate",
            "firewall.web",
            "--set",
            r#"ingress=[{"protocol":"tcp","from_port":443,"to_port":443,"cidrs":["0.0.0.0/0"]},{"protocol":"tcp","from_port":22,"to_port":22,"cidrs":["0.0.0.0/0"]}]"#,
            ".",
        ][..],
    ] {
        ok(&chimera(dir.path(), args));
    }
    dir
}

fn serve(dir: &std::path::Path, heal: &str) -> Daemon {
    Daemon::start(dir, &[".", "--heal", heal, "--interval", "0.3"], &[])
}

#[test]
fn auto_heals_drift_and_metrics_follow() {
    let dir = webapp();
    let daemon = serve(dir.path(), "auto");
    assert_eq!(daemon.get("/healthz"), "ok\n");
    let healed = daemon.wait_for(|s| s["outcome"] == "healed");
    let drift: Vec<&str> = healed["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[0].as_str().unwrap())
        .collect();
    assert_eq!(
        drift,
        [
            "firewall.web",
            "instance.web-1",
            "subnet.public",
            "volume.data"
        ]
    );
    assert!(
        healed["ticks"].as_u64() <= Some(2),
        "healed within two ticks: {healed}"
    );
    // The webapp runs on the free local simulator: its cost is known, and $0.
    assert_eq!(healed["monthly_cost"], 0.0);
    // The next tick finds the stack in sync.
    daemon.wait_for(|s| s["outcome"] == "in-sync");
    assert_eq!(daemon.get("/readyz"), "ready\n");

    let metrics = daemon.get("/metrics");
    let found = samples(&metrics, "chimera_drift_found_total");
    assert!(
        found
            .iter()
            .any(|(l, v)| l.contains("kind=\"instance\"") && *v == 1.0),
        "{metrics}"
    );
    let healed = samples(&metrics, "chimera_drift_healed_total");
    assert_eq!(healed.iter().map(|(_, v)| v).sum::<f64>(), 4.0, "{metrics}");
    let applies = samples(&metrics, "chimera_heal_applies_total");
    assert!(
        applies
            .iter()
            .any(|(l, v)| l.contains("outcome=\"succeeded\"") && *v == 1.0)
    );
    let last = samples(
        &metrics,
        "chimera_last_successful_reconcile_timestamp_seconds",
    );
    assert!(last[0].1 > 1.7e9, "{metrics}");
    assert!(!samples(&metrics, "chimera_reconcile_duration_seconds_count").is_empty());
    assert_eq!(daemon.terminate(), 0, "SIGTERM ends the daemon cleanly");

    // The heal is in the stack's history, by the reconciler; the cloud is whole again.
    let history =
        String::from_utf8_lossy(&chimera(dir.path(), &["history", "."]).stdout).into_owned();
    assert!(history.contains("reconciler:"), "{history}");
    let list = chimera(dir.path(), &["local", "list", "."]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 8);
    let plan = chimera(dir.path(), &["plan", ".", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
}

#[test]
fn report_records_drift_and_changes_nothing() {
    let dir = webapp();
    let daemon = serve(dir.path(), "report");
    let s = daemon.wait_for(|s| s["ticks"].as_u64() >= Some(2));
    assert_eq!(s["outcome"], "drifted");
    assert_eq!(s["drift"].as_array().unwrap().len(), 4);
    let metrics = daemon.get("/metrics");
    assert!(
        samples(&metrics, "chimera_drift_healed_total").is_empty(),
        "{metrics}"
    );
    assert_eq!(daemon.terminate(), 0);
    let list = chimera(dir.path(), &["local", "list", "."]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).lines().count(),
        7,
        "untouched"
    );
}

#[test]
fn beyond_loopback_a_token_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let out = chimera(
        dir.path(),
        &["serve", ".", "--listen", "0.0.0.0:0", "--ticks", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a token"));
}
