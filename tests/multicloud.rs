//! The multicloud example (examples/multicloud) end to end through the `chimera` binary: AWS on
//! moto, GCP and Azure on the in-repo fakes, all on 127.0.0.1. Applied, re-planned empty,
//! destroyed, and nothing is left in any of the three.

use std::path::Path;
use std::process::{Command, Output};

use chimera_testkit::fake_azure::{self, FakeAzure};
use chimera_testkit::fake_gcp::{self, FakeGcp};
use chimera_testkit::{MOTO_AMI, Moto};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_multicloud_example_on_moto_and_the_fakes() {
    let moto = Moto::start();
    let gcp = FakeGcp::start(fake_gcp::Knobs::default());
    let azure = FakeAzure::start(fake_azure::Knobs::default());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multicloud/main.ncl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("main.ncl"),
        format!(
            r#"(import "{}") & {{
  providers = {{
    aws = {{ images = {{ "ubuntu-24.04" = "{MOTO_AMI}" }} }},
    gcp = {{ project = "demo", endpoint = "{}", poll_interval_ms = 20 }},
    azure = {{ subscription = "00000000-0000-0000-0000-000000000000", endpoint = "{}", credential = "none", max_poll_interval_ms = 20 }},
  }},
}}
"#,
            example.display(),
            gcp.url,
            azure.endpoint
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
        c.args(args)
            .current_dir(d)
            .env("NO_COLOR", "1")
            .env_remove("CHIMERA_STATE");
        for (k, v) in chimera_testkit::env_for(&moto.endpoint) {
            c.env(k, v);
        }
        c.output().expect("run chimera")
    };

    let o = run(&["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(chimera_testkit::live_instances(
            &moto.endpoint,
            "multicloud"
        ))
        .len(),
        2
    );
    assert_eq!(gcp.all("instances").len(), 2);
    assert_eq!(
        azure.count_tagged(
            "Microsoft.Compute/virtualMachines",
            "chimera-stack",
            "multicloud"
        ),
        2
    );
    let o = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "re-planned empty: {}", text(&o));

    let o = run(&["destroy", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        rt.block_on(chimera_testkit::live_instances(
            &moto.endpoint,
            "multicloud"
        ))
        .is_empty()
    );
    assert_eq!(
        rt.block_on(chimera_testkit::tagged_non_instances(
            &moto.endpoint,
            "multicloud"
        )),
        0
    );
    for kind in ["networks", "subnetworks", "firewalls", "instances", "disks"] {
        assert_eq!(gcp.all(kind), Default::default(), "gcp {kind} left");
    }
    assert_eq!(azure.resource_ids(), Vec::<String>::new());
    assert_eq!(azure.resource_groups(), Vec::<String>::new());
}
