//! The AWS provider through the `chimera` binary against moto on 127.0.0.1: the webapp end to
//! end, kill -9 during RunInstances bursts, an instance type EC2 rejects, and throttling.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chimera_testkit::{MOTO_AMI, Moto, ThrottleProxy};

fn chimera(dir: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE");
    for (k, v) in chimera_testkit::env_for(endpoint) {
        c.env(k, v);
    }
    c
}

fn run(dir: &Path, endpoint: &str, args: &[&str]) -> Output {
    chimera(dir, endpoint, args).output().expect("run chimera")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn webapp_on_aws(web_size: &str) -> String {
    let webapp = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webapp/main.ncl");
    format!(
        r#"(import "{}") & {{
  cloud = 'aws,
  web_size = '{web_size},
  providers = {{ aws = {{ images = {{ "ubuntu-24.04" = "{MOTO_AMI}" }} }} }},
}}
"#,
        webapp.display()
    )
}

#[test]
fn webapp_on_aws_end_to_end() {
    let moto = Moto::start();
    let ep = moto.endpoint.as_str();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), webapp_on_aws("small")).unwrap();

    let o = run(d, ep, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, ep, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "idempotent: {}", text(&o));
    let rt = rt();
    assert_eq!(
        rt.block_on(chimera_testkit::live_instances(ep, "webapp"))
            .len(),
        3
    );

    // A bigger size class is an in-place instance type change (stop, modify, start).
    std::fs::write(d.join("main.ncl"), webapp_on_aws("medium")).unwrap();
    let o = run(d, ep, &["plan", "--detailed-exitcode"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("~ instance.web-0") && t.contains("t3.medium"),
        "{t}"
    );
    assert!(
        t.contains("0 to create, 3 to update, 0 to replace, 0 to delete"),
        "{t}"
    );
    let o = run(d, ep, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, ep, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Drift made with a raw SDK call is reported by refresh, and the next plan heals it.
    rt.block_on(async {
        use chimera_testkit::aws_sdk_ec2::types::{Filter, Tag};
        let ec2 = chimera_testkit::ec2(ep).await;
        let vpcs = ec2
            .describe_vpcs()
            .filters(
                Filter::builder()
                    .name("tag:chimera-address")
                    .values("network.main")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let id = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
        ec2.create_tags()
            .resources(id)
            .tags(Tag::builder().key("env").value("prod").build())
            .send()
            .await
            .unwrap();
    });
    let o = run(d, ep, &["refresh"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("network.main") && t.contains("prod"), "{t}");
    let o = run(d, ep, &["plan", "--detailed-exitcode"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("~ network.main"), "{t}");

    let o = run(d, ep, &["destroy", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        rt.block_on(chimera_testkit::live_instances(ep, "webapp"))
            .is_empty()
    );
    assert_eq!(
        rt.block_on(chimera_testkit::tagged_non_instances(ep, "webapp")),
        0
    );
}

fn fleet_on_aws(count: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let on = {{ provider = 'aws, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "workers", network = net, cidr = "10.0.0.0/20" }} in
{{ stack = "burst", providers = {{ aws = {{ images = {{ "ubuntu-24.04" = "{MOTO_AMI}" }} }} }},
  resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & on & {{ name = "w-%{{std.to_string i}}", size = 'small, subnet = sn }}) {count} }}
"#
    )
}

#[test]
fn kill_9_during_run_instances_never_duplicates() {
    let iterations: usize = std::env::var("CHIMERA_AWS_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let moto = Moto::start();
    let ep = moto.endpoint.as_str();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let count = 30;
    std::fs::write(d.join("main.ncl"), fleet_on_aws(count)).unwrap();
    let mut seed: u64 = 0xa3_5eed;
    let mut interrupted = 0;
    for _ in 0..iterations {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = 150 + (seed >> 33) % 900;
        let mut child = chimera(d, ep, &["apply", "-y", "--parallelism", "16"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(wait));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} kills hit an apply in flight"
    );
    let o = run(d, ep, &["apply", "-y", "--parallelism", "16"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, ep, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "converged: {}", text(&o));
    let live = rt().block_on(chimera_testkit::live_instances(ep, "burst"));
    assert_eq!(live.len(), count, "one instance per address: {live:?}");
    assert!(live.values().all(|n| *n == 1), "duplicates: {live:?}");
}

#[test]
fn an_instance_type_ec2_rejects_names_the_address_and_the_aws_code() {
    let moto = Moto::start_with_env(&[("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")]);
    let ep = moto.endpoint.as_str();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("main.ncl"),
        format!(
            r#"let c = import "chimera.ncl" in
let on = {{ provider = 'aws, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "s", network = net, cidr = "10.0.1.0/24" }} in
{{ stack = "bad", providers = {{ aws = {{ images = {{ "ubuntu-24.04" = "{MOTO_AMI}" }} }} }},
  resources = [net, sn, c.Instance & on & {{ name = "huge", size = 'small, subnet = sn, aws = {{ instance_type = "m9.enormous" }} }}] }}
"#
        ),
    )
    .unwrap();
    let o = run(d, ep, &["apply", "-y"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("instance.huge")
            && t.contains("InvalidInstanceType")
            && t.contains("m9.enormous"),
        "{t}"
    );
    // What could be created was, and is in state.
    let o = run(d, ep, &["state", "list", "--stack", "bad"]);
    assert!(text(&o).contains("subnet.s"), "{}", text(&o));
}

#[test]
fn throttled_requests_are_retried_and_the_apply_succeeds() {
    let moto = Moto::start();
    let proxy = ThrottleProxy::start(&moto.endpoint, 4);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet_on_aws(6)).unwrap();
    let o = run(d, &proxy.endpoint, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(proxy.throttled() > 3, "throttled {}", proxy.throttled());
    let live = rt().block_on(chimera_testkit::live_instances(&moto.endpoint, "burst"));
    assert_eq!(live.len(), 6);
    let o = run(d, &proxy.endpoint, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn orphans_and_import_on_aws() {
    let moto = Moto::start();
    let ep = moto.endpoint.as_str();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("main.ncl"),
        r#"let c = import "chimera.ncl" in
{ stack = "adopt", resources = [
  c.Network & { provider = 'aws, name = "main", cidr = "10.0.0.0/16" },
  c.Network & { provider = 'aws, name = "legacy", cidr = "10.9.0.0/16" } ] }
"#,
    )
    .unwrap();
    let o = run(d, ep, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    // Made outside Chimera: one tagged for the stack (an orphan), one untagged (to import).
    let (orphan, legacy) = rt().block_on(async {
        use chimera_testkit::aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
        let ec2 = chimera_testkit::ec2(ep).await;
        let tagged = TagSpecification::builder()
            .resource_type(ResourceType::Vpc)
            .tags(Tag::builder().key("chimera-stack").value("adopt").build())
            .tags(
                Tag::builder()
                    .key("chimera-address")
                    .value("network.stray")
                    .build(),
            )
            .build();
        let orphan = ec2
            .create_vpc()
            .cidr_block("10.7.0.0/16")
            .tag_specifications(tagged)
            .send()
            .await
            .unwrap();
        let legacy = ec2
            .create_vpc()
            .cidr_block("10.9.0.0/16")
            .send()
            .await
            .unwrap();
        (
            orphan.vpc().unwrap().vpc_id().unwrap().to_string(),
            legacy.vpc().unwrap().vpc_id().unwrap().to_string(),
        )
    });
    let o = run(d, ep, &["orphans"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(&orphan) && t.contains("network.stray"), "{t}");
    assert!(
        !t.contains(&legacy),
        "untagged resources are not the stack's: {t}"
    );

    // Import the untagged VPC at an address the stack declares, after forgetting ours there.
    let o = run(d, ep, &["destroy", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        d,
        ep,
        &["import", "network.legacy", &legacy, "--provider", "aws"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, ep, &["state", "list", "--stack", "adopt"]);
    assert!(
        text(&o).contains("network.legacy") && text(&o).contains(&legacy),
        "{}",
        text(&o)
    );
    // The plan keeps the imported VPC (same CIDR) and creates only the missing one.
    let o = run(d, ep, &["plan"]);
    let t = text(&o);
    assert!(
        t.contains("+ network.main") && !t.contains("network.legacy will be"),
        "{t}"
    );
}
