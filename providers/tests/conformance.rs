//! The provider conformance suite, one test per provider, kind and verb
//! (`local::subnet::update`, `aws::volume::find_by_token`), plus the local cloud under
//! throttling and injected failures, and a deliberately broken provider that must fail many
//! cases at once. AWS runs against moto on 127.0.0.1, one server per test.

use std::sync::Arc;

use async_trait::async_trait;
use chimera_model::Kind;
use chimera_providers::conformance::{self, Harness, Verb};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_providers::{CloudRef, Observed, Provider, Request, Result as PResult, Retrying};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for (kind, verb) in conformance::cases() {
        trials.push(Trial::test(format!("local::{kind}::{verb}"), move || {
            runtime().block_on(async move {
                let (_dir, local) = local(Knobs::default()).await;
                outcome(conformance::check(&local, kind, verb).await)
            })
        }));
        trials.push(Trial::test(format!("aws::{kind}::{verb}"), move || {
            runtime().block_on(async move {
                let aws = aws::Moto::start().await;
                outcome(conformance::check(&aws, kind, verb).await)
            })
        }));
        trials.push(Trial::test(format!("gcp::{kind}::{verb}"), move || {
            runtime().block_on(async move {
                let gcp = gcp::OnFake::start();
                gcp::outcome(kind, verb, conformance::check(&gcp, kind, verb).await)
            })
        }));
        trials.push(Trial::test(format!("azure::{kind}::{verb}"), move || {
            runtime().block_on(async move {
                let azure = azure::OnFake::start();
                outcome(conformance::check(&azure, kind, verb).await)
            })
        }));
    }
    trials.push(Trial::test("local::under_throttling_and_latency", || {
        runtime().block_on(under_throttling_and_latency())
    }));
    trials.push(Trial::test("local::injected_failures_are_reported", || {
        runtime().block_on(injected_failures_are_reported())
    }));
    trials.push(Trial::test("broken_provider_fails_many_cases", || {
        runtime().block_on(broken_provider_fails_many_cases())
    }));
    libtest_mimic::run(&args, trials).exit();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn outcome(r: Result<(), Vec<String>>) -> Result<(), Failed> {
    r.map_err(|failures| Failed::from(failures.join("\n")))
}

/// The local cloud in a temporary directory, its calls retried like the engine's.
struct Local {
    cloud: Arc<LocalCloud>,
    retrying: Retrying<Arc<LocalCloud>>,
}

async fn local(knobs: Knobs) -> (tempfile::TempDir, Local) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cloud = Arc::new(
        LocalCloud::open(&dir.path().join("cloud.db"), knobs)
            .await
            .expect("open the local cloud"),
    );
    let retrying = Retrying(cloud.clone());
    (dir, Local { cloud, retrying })
}

#[async_trait]
impl Harness for Local {
    fn provider(&self) -> &dyn Provider {
        &self.retrying
    }
    fn region(&self) -> &str {
        "local-us-east"
    }
    async fn tag_out_of_band(&self, at: &CloudRef, key: &str, value: &str) -> Result<(), String> {
        self.cloud.set_tag(&at.id, key, value).await
    }
}

async fn under_throttling_and_latency() -> Result<(), Failed> {
    let (_dir, local) = local(Knobs {
        latency: std::time::Duration::from_millis(2),
        throttle_rate: 0.3,
        ..Knobs::default()
    })
    .await;
    let failed = conformance::check_all(&local).await;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{failed:#?}").into())
    }
}

async fn injected_failures_are_reported() -> Result<(), Failed> {
    let (_dir, local) = local(Knobs {
        failure_rate: 1.0,
        ..Knobs::default()
    })
    .await;
    let failed = conformance::check(&local, Kind::Network, Verb::Create)
        .await
        .expect_err("every create fails");
    if failed.iter().any(|f| f.contains("InjectedFailure")) {
        Ok(())
    } else {
        Err(format!("expected InjectedFailure, got {failed:?}").into())
    }
}

/// A provider that forgets idempotency tokens (every create is new) and drops the user's tags.
struct Broken(Local);

#[async_trait]
impl Provider for Broken {
    fn name(&self) -> chimera_model::ProviderName {
        self.0.retrying.name()
    }
    async fn create(&self, req: &Request<'_>) -> PResult<Observed> {
        let token = format!("{}-{}", req.token, fastrand::u64(..));
        let no_tags = Default::default();
        let req = Request {
            token: &token,
            tags: &no_tags,
            ..req.clone()
        };
        self.0.retrying.create(&req).await
    }
    async fn read(&self, at: &CloudRef) -> PResult<Option<Observed>> {
        self.0.retrying.read(at).await
    }
    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> PResult<Observed> {
        self.0.retrying.update(req, cloud_id).await
    }
    async fn delete(&self, at: &CloudRef) -> PResult<()> {
        self.0.retrying.delete(at).await
    }
    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> PResult<Option<Observed>> {
        self.0.retrying.find_by_token(kind, region, token).await
    }
    async fn list_managed(&self, stack: &str) -> PResult<Vec<Observed>> {
        self.0.retrying.list_managed(stack).await
    }
}

struct BrokenHarness(Broken);

#[async_trait]
impl Harness for BrokenHarness {
    fn provider(&self) -> &dyn Provider {
        &self.0
    }
    fn region(&self) -> &str {
        self.0.0.region()
    }
    async fn tag_out_of_band(&self, at: &CloudRef, key: &str, value: &str) -> Result<(), String> {
        self.0.0.tag_out_of_band(at, key, value).await
    }
}

async fn broken_provider_fails_many_cases() -> Result<(), Failed> {
    let (_dir, local) = local(Knobs::default()).await;
    let failed = conformance::check_all(&BrokenHarness(Broken(local))).await;
    let cases = conformance::cases().count();
    let text = format!("{failed:#?}");
    // Every kind's create, read, update, find_by_token and list_managed check the tags or
    // the token; drift and delete do not depend on them.
    let problems = [
        (
            failed.len() >= 5 * 5,
            format!("only {} of {cases} cases failed", failed.len()),
        ),
        (
            text.contains("made a second resource"),
            "the lost idempotency was not reported".into(),
        ),
        (
            text.contains("tag `suite`"),
            "the dropped tags were not reported".into(),
        ),
        (
            Kind::ALL
                .iter()
                .all(|k| failed.iter().any(|(fk, _, _)| fk == k)),
            "some kind passed".into(),
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
        Err(format!("{}\n{text}", broken.join("\n")).into())
    }
}

mod aws {
    use super::*;
    use chimera_aws::{AwsCloud, AwsSettings};
    use chimera_testkit::{MOTO_AMI, REGION};

    /// The AWS provider on its own moto.
    pub struct Moto {
        moto: chimera_testkit::Moto,
        cloud: Retrying<AwsCloud>,
    }

    impl Moto {
        pub async fn start() -> Moto {
            let moto = chimera_testkit::Moto::start();
            let settings = AwsSettings {
                images: [("ubuntu-24.04".to_string(), MOTO_AMI.to_string())].into(),
                ..AwsSettings::default()
            };
            let cloud = Retrying(AwsCloud::with_config(
                settings,
                chimera_testkit::sdk_config(&moto.endpoint).await,
            ));
            Moto { moto, cloud }
        }
    }

    #[async_trait]
    impl Harness for Moto {
        fn provider(&self) -> &dyn Provider {
            &self.cloud
        }
        fn region(&self) -> &str {
            REGION
        }
        async fn tag_out_of_band(
            &self,
            at: &CloudRef,
            key: &str,
            value: &str,
        ) -> Result<(), String> {
            chimera_testkit::ec2(&self.moto.endpoint)
                .await
                .create_tags()
                .resources(&at.id)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key(key)
                        .value(value)
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }
    }
}

mod azure {
    use super::*;
    use chimera_azure::{AzureCloud, AzureSettings, CredentialKind, subnet_tag_key};
    use chimera_testkit::fake_azure::{FakeAzure, Knobs};

    /// The Azure provider on its own fake of ARM.
    pub struct OnFake {
        fake: FakeAzure,
        cloud: Retrying<AzureCloud>,
    }

    impl OnFake {
        pub fn start() -> OnFake {
            let fake = FakeAzure::start(Knobs::default());
            let settings = AzureSettings {
                subscription: Some("00000000-0000-0000-0000-000000000000".into()),
                endpoint: fake.endpoint.clone(),
                credential: CredentialKind::None,
                max_poll_interval: std::time::Duration::from_millis(20),
                images: [(
                    "ubuntu-24.04".to_string(),
                    "Canonical:ubuntu-24_04-lts:server:latest".to_string(),
                )]
                .into(),
                ..AzureSettings::default()
            };
            let cloud = Retrying(AzureCloud::new(settings));
            OnFake { fake, cloud }
        }
    }

    #[async_trait]
    impl Harness for OnFake {
        fn provider(&self) -> &dyn Provider {
            &self.cloud
        }
        fn region(&self) -> &str {
            "eastus"
        }
        async fn tag_out_of_band(
            &self,
            at: &CloudRef,
            key: &str,
            value: &str,
        ) -> Result<(), String> {
            // A subnet's tags live on its network.
            match at.id.rsplit_once("/subnets/") {
                Some((network, name)) => {
                    self.fake
                        .set_tag(network, &subnet_tag_key(name, key), value)
                }
                None => self.fake.set_tag(&at.id, key, value),
            }
        }
    }
}

mod gcp {
    use super::*;
    use chimera_gcp::{GcpCloud, GcpSettings};
    use chimera_testkit::fake_gcp::{FakeGcp, Knobs};

    pub const PROJECT: &str = "chimera-conformance";

    /// The GCP provider on its own fake of the Compute API. The suite's specs name AWS types
    /// (`t3.micro`, `gp3`): the fake is told they exist.
    pub struct OnFake {
        fake: FakeGcp,
        cloud: Retrying<GcpCloud>,
    }

    impl OnFake {
        pub fn start() -> OnFake {
            let fake = FakeGcp::start(Knobs {
                op_delay: std::time::Duration::from_millis(4),
                extra_machine_types: vec!["t3.micro".into(), "t3.small".into()],
                extra_disk_types: vec!["gp3".into()],
                ..Knobs::default()
            });
            let settings = GcpSettings {
                project: Some(PROJECT.into()),
                endpoint: Some(fake.url.clone()),
                poll_interval: std::time::Duration::from_millis(2),
                images: [(
                    "ubuntu-24.04".to_string(),
                    "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64"
                        .to_string(),
                )]
                .into(),
                ..GcpSettings::default()
            };
            let cloud = Retrying(GcpCloud::new(settings));
            OnFake { fake, cloud }
        }
    }

    /// GCP fixes a network's and a subnetwork's description (where their tags are kept) at
    /// creation: the suite's update of their tags must be refused with what to do, and
    /// nothing else may fail.
    pub fn outcome(kind: Kind, verb: Verb, r: Result<(), Vec<String>>) -> Result<(), Failed> {
        if !(matches!(kind, Kind::Network | Kind::Subnet) && verb == Verb::Update) {
            return super::outcome(r);
        }
        match r {
            Err(f)
                if f.len() == 1
                    && f[0].contains("UnsupportedUpdate")
                    && f[0].contains("replace") =>
            {
                Ok(())
            }
            Err(f) => Err(Failed::from(f.join("\n"))),
            Ok(()) => {
                Err("GCP cannot change these tags in place, yet the update said it did".into())
            }
        }
    }

    #[async_trait]
    impl Harness for OnFake {
        fn provider(&self) -> &dyn Provider {
            &self.cloud
        }
        fn region(&self) -> &str {
            "us-east1"
        }
        async fn tag_out_of_band(
            &self,
            at: &CloudRef,
            key: &str,
            value: &str,
        ) -> Result<(), String> {
            let (key, value) = (key.to_string(), value.to_string());
            // Labels where GCP has them; the description (as Chimera writes it) elsewhere.
            let label = |r: &mut serde_json::Value| r["labels"][&key] = value.clone().into();
            let described = |r: &mut serde_json::Value| {
                let mut d: serde_json::Value =
                    serde_json::from_str(r["description"].as_str().unwrap_or("{}"))
                        .unwrap_or_default();
                d["chimera"][&key] = value.clone().into();
                r["description"] = d.to_string().into();
            };
            let paths: Vec<String> = match at.kind {
                Kind::Network => vec![format!("projects/{PROJECT}/global/networks/{}", at.id)],
                Kind::Subnet => vec![format!(
                    "projects/{PROJECT}/regions/{}/subnetworks/{}",
                    at.region, at.id
                )],
                Kind::Firewall => self
                    .fake
                    .resources(PROJECT, "global/firewalls")
                    .into_keys()
                    .filter(|n| n.starts_with(&format!("{}-", at.id)))
                    .map(|n| format!("projects/{PROJECT}/global/firewalls/{n}"))
                    .collect(),
                Kind::Instance | Kind::Volume => {
                    let (zone, name) = at.id.split_once('/').ok_or("not zone/name")?;
                    let c = if at.kind == Kind::Instance {
                        "instances"
                    } else {
                        "disks"
                    };
                    vec![format!("projects/{PROJECT}/zones/{zone}/{c}/{name}")]
                }
            };
            for p in paths {
                let changed = match at.kind {
                    Kind::Instance | Kind::Volume => self.fake.mutate(&p, label),
                    _ => self.fake.mutate(&p, described),
                };
                if !changed {
                    return Err(format!("{p} is not in the fake"));
                }
            }
            Ok(())
        }
    }
}
