//! The conformance suite every provider passes: the contract the engine relies on, checked for
//! every kind and every verb.
//!
//! A case is a `(kind, verb)` pair ([`cases`]); [`check`] runs one on a [`Harness`] (a provider,
//! the region to use, and a way to change resources behind Chimera's back) and returns every
//! failed expectation of the case, not just the first. Test binaries list one test per case and
//! provider (`local::subnet::update`, `aws::volume::find_by_token`, …), so a broken provider
//! fails many tests at once and each names what broke.
//!
//! What is checked, per kind:
//! - `create`: ids, outputs and tags are set; the cloud reports the attributes asked for; a
//!   repeated create with the same token returns the same resource;
//! - `read`: a read and a batched `observe` see what was created, in the order asked;
//! - `update`: an in-place change (a kind-specific attribute and the user's tags) lands on the
//!   same id and keeps the creation token;
//! - `replace`: deleting and creating anew (a new token) gives a new id, and the old one is gone;
//! - `delete`: the resource is absent afterwards, to `read` and `observe`; deleting again
//!   succeeds;
//! - `find_by_token`: after a create whose response was lost, the token finds the resource and a
//!   retried create makes no duplicate; an unused token finds nothing;
//! - `list_managed`: the stack's resources are listed, tagged, and other stacks' are not;
//! - `drift`: a change made out of band (a tag set in the console) is what `read` and
//!   `observe` report.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chimera_model::kinds::{
    FirewallSpec, InstanceSpec, NetworkSpec, Rule, Spec, SubnetSpec, VolumeSpec, firewall,
};
use chimera_model::{Address, Kind};
use serde_json::{Map, Value};

use crate::{CloudRef, Observed, Provider, Request, TAG_ADDRESS, TAG_STACK, TAG_TOKEN};

/// What the suite runs against.
#[async_trait]
pub trait Harness: Send + Sync {
    fn provider(&self) -> &dyn Provider;
    /// The provider's region to create in (`us-east-1`).
    fn region(&self) -> &str;
    /// Sets the user tag `key = value` on a resource behind Chimera's back, as someone in the
    /// cloud's console would.
    async fn tag_out_of_band(&self, at: &CloudRef, key: &str, value: &str) -> Result<(), String>;
}

/// A provider verb the suite checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Create,
    Read,
    Update,
    Replace,
    Delete,
    FindByToken,
    ListManaged,
    Drift,
}

impl Verb {
    pub const ALL: [Verb; 8] = [
        Verb::Create,
        Verb::Read,
        Verb::Update,
        Verb::Replace,
        Verb::Delete,
        Verb::FindByToken,
        Verb::ListManaged,
        Verb::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Read => "read",
            Verb::Update => "update",
            Verb::Replace => "replace",
            Verb::Delete => "delete",
            Verb::FindByToken => "find_by_token",
            Verb::ListManaged => "list_managed",
            Verb::Drift => "drift",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every case of the suite: each kind with each verb.
pub fn cases() -> impl Iterator<Item = (Kind, Verb)> {
    Kind::ALL
        .into_iter()
        .flat_map(|k| Verb::ALL.into_iter().map(move |v| (k, v)))
}

/// Runs one case; `Err` holds every expectation it broke. Each case uses its own stack name,
/// so cases may share a cloud.
pub async fn check(h: &dyn Harness, kind: Kind, verb: Verb) -> Result<(), Vec<String>> {
    let mut cx = Cx {
        h,
        stack: format!("conformance-{kind}-{verb}"),
        failures: Vec::new(),
        serial: 0,
    };
    let r = match verb {
        Verb::Create => cx.create_case(kind).await,
        Verb::Read => cx.read_case(kind).await,
        Verb::Update => cx.update_case(kind).await,
        Verb::Replace => cx.replace_case(kind).await,
        Verb::Delete => cx.delete_case(kind).await,
        Verb::FindByToken => cx.find_by_token_case(kind).await,
        Verb::ListManaged => cx.list_managed_case(kind).await,
        Verb::Drift => cx.drift_case(kind).await,
    };
    if let Err(e) = r {
        cx.failures.push(e);
    }
    if cx.failures.is_empty() {
        Ok(())
    } else {
        Err(cx.failures)
    }
}

/// Runs every case; returns the failed ones with what they broke.
pub async fn check_all(h: &dyn Harness) -> Vec<(Kind, Verb, Vec<String>)> {
    let mut out = Vec::new();
    for (kind, verb) in cases() {
        if let Err(f) = check(h, kind, verb).await {
            out.push((kind, verb, f));
        }
    }
    out
}

/// A resource the suite made, with what it asked for.
struct Made {
    address: Address,
    proposal: Owned,
    token: String,
    observed: Observed,
}

/// A request's parts, owned.
#[derive(Clone)]
struct Owned {
    spec: Spec,
    tags: BTreeMap<String, String>,
}

struct Cx<'a> {
    h: &'a dyn Harness,
    stack: String,
    failures: Vec<String>,
    serial: u32,
}

/// A provider call failed: the case cannot go on.
fn failed(what: &str) -> impl FnOnce(crate::ProviderError) -> String + '_ {
    move |e| format!("{what} failed: {e}")
}

impl Cx<'_> {
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    fn p(&self) -> &dyn Provider {
        self.h.provider()
    }

    fn token(&mut self, what: &str) -> String {
        self.serial += 1;
        format!("{}-{what}-{}", self.stack, self.serial)
    }

    async fn make(&mut self, address: Address, proposal: Owned) -> Result<Made, String> {
        let token = self.token(address.kind.as_str());
        let observed = self.create_with(&address, &proposal, &token).await?;
        Ok(Made {
            address,
            proposal,
            token,
            observed,
        })
    }

    async fn create_with(
        &mut self,
        address: &Address,
        proposal: &Owned,
        token: &str,
    ) -> Result<Observed, String> {
        let native = Map::new();
        let req = Request {
            stack: &self.stack,
            address,
            native_region: self.h.region(),
            spec: &proposal.spec,
            tags: &proposal.tags,
            native: &native,
            token,
        };
        self.p()
            .create(&req)
            .await
            .map_err(|e| format!("create {address} failed: {e}"))
    }

    async fn update_with(&mut self, made: &Made, proposal: &Owned) -> Result<Observed, String> {
        let native = Map::new();
        let token = self.token("update");
        let req = Request {
            stack: &self.stack,
            address: &made.address,
            native_region: self.h.region(),
            spec: &proposal.spec,
            tags: &proposal.tags,
            native: &native,
            token: &token,
        };
        self.p()
            .update(&req, &made.observed.cloud_id)
            .await
            .map_err(|e| format!("update {} failed: {e}", made.address))
    }

    /// The resource of `kind` under test, with whatever it needs created first.
    async fn subject(&mut self, kind: Kind, name: &str) -> Result<Made, String> {
        let spec = self.spec_of(kind, name).await?;
        self.make(Address::new(kind, name), owned(spec)).await
    }

    /// A spec of `kind`, creating what it refers to.
    async fn spec_of(&mut self, kind: Kind, name: &str) -> Result<Spec, String> {
        Ok(match kind {
            Kind::Network => Spec::Network(NetworkSpec {
                cidr: "10.42.0.0/16".into(),
            }),
            Kind::Subnet => {
                let net = self.network(name).await?;
                Spec::Subnet(subnet_spec(&net, "10.42.1.0/24"))
            }
            Kind::Firewall => {
                let net = self.network(name).await?;
                Spec::Firewall(FirewallSpec {
                    network: net,
                    ingress: vec![rule("tcp", 22, "10.0.0.0/8")],
                    egress: vec![Rule {
                        protocol: "all".into(),
                        from_port: None,
                        to_port: None,
                        cidrs: vec!["0.0.0.0/0".into()],
                        description: None,
                    }],
                })
            }
            Kind::Instance => {
                let net = self.network(name).await?;
                let subnet = self
                    .make(
                        Address::new(Kind::Subnet, format!("{name}-subnet")),
                        owned(Spec::Subnet(subnet_spec(&net, "10.42.1.0/24"))),
                    )
                    .await?;
                Spec::Instance(InstanceSpec {
                    size: Some("micro".into()),
                    cpu: None,
                    memory_gib: None,
                    instance_type: "t3.micro".into(),
                    image: "ubuntu-24.04".into(),
                    image_ref: Value::Null,
                    subnet: subnet.observed.cloud_id,
                    firewalls: Vec::new(),
                    public_ip: false,
                    user_data: Some("#!/bin/sh\necho conformance\n".into()),
                })
            }
            Kind::Volume => Spec::Volume(VolumeSpec {
                size_gib: 10,
                volume_type: "ssd".into(),
                disk_type: "gp3".into(),
                zone: "a".into(),
                encrypted: true,
                instance: None,
            }),
        })
    }

    async fn network(&mut self, name: &str) -> Result<String, String> {
        let net = self
            .make(
                Address::new(Kind::Network, format!("{name}-net")),
                owned(Spec::Network(NetworkSpec {
                    cidr: "10.42.0.0/16".into(),
                })),
            )
            .await?;
        Ok(net.observed.cloud_id)
    }

    /// What a create or read reports agrees with what was asked: identity, tags, attributes.
    fn agrees(&mut self, what: &str, made: &Made, o: &Observed) {
        let kind = made.address.kind;
        self.expect(o.kind == kind, || {
            format!("{what}: kind is {}, expected {kind}", o.kind)
        });
        self.expect(
            o.outputs.get("id").and_then(Value::as_str) == Some(o.cloud_id.as_str()),
            || format!("{what}: outputs.id must be the cloud id {}", o.cloud_id),
        );
        let region = self.h.region().to_string();
        self.expect(o.native_region == region, || {
            format!(
                "{what}: region is `{}`, expected `{region}`",
                o.native_region
            )
        });
        let mut want: Vec<(String, String)> = vec![
            (TAG_STACK.into(), self.stack.clone()),
            (TAG_ADDRESS.into(), made.address.to_string()),
            (TAG_TOKEN.into(), made.token.clone()),
        ];
        want.extend(made.proposal.tags.clone());
        for (k, v) in want {
            self.expect(o.tags.get(&k) == Some(&v), || {
                format!(
                    "{what}: tag `{k}` should be `{v}`, got {:?}",
                    o.tags.get(&k)
                )
            });
        }
        // Every attribute the cloud reports that was asked for is as asked.
        for (k, asked) in made.proposal.spec.to_attrs() {
            let Some(seen) = o.attrs.get(&k) else {
                continue;
            };
            let same = if firewall::is_rules(kind, &k) {
                firewall::canonical_rules(seen) == firewall::canonical_rules(&asked)
            } else {
                seen == &asked
            };
            self.expect(same, || {
                format!("{what}: `{k}` is {seen}, asked for {asked}")
            });
        }
    }

    async fn read(&mut self, o: &Observed) -> Result<Option<Observed>, String> {
        self.p()
            .read(&o.at())
            .await
            .map_err(|e| format!("read {} failed: {e}", o.cloud_id))
    }

    async fn create_case(&mut self, kind: Kind) -> Result<(), String> {
        let made = self.subject(kind, "subject").await?;
        self.agrees("create", &made, &made.observed.clone());
        let again = self
            .create_with(&made.address, &made.proposal, &made.token)
            .await?;
        self.expect(again.cloud_id == made.observed.cloud_id, || {
            format!(
                "a repeated create with the same token made a second resource ({} and {})",
                made.observed.cloud_id, again.cloud_id
            )
        });
        Ok(())
    }

    async fn read_case(&mut self, kind: Kind) -> Result<(), String> {
        let made = self.subject(kind, "subject").await?;
        match self.read(&made.observed).await? {
            Some(o) => {
                self.expect(o.cloud_id == made.observed.cloud_id, || {
                    format!(
                        "read returned {}, not {}",
                        o.cloud_id, made.observed.cloud_id
                    )
                });
                self.agrees("read", &made, &o);
            }
            None => self
                .failures
                .push("read does not find what was created".into()),
        }
        // A batch, with the same resource twice and a second one: answered in the order asked.
        let other = self.subject(Kind::Network, "other").await?;
        let batch = [made.observed.at(), other.observed.at(), made.observed.at()];
        let seen = self.p().observe(&batch).await.map_err(failed("observe"))?;
        let ids: Vec<Option<&str>> = seen
            .iter()
            .map(|o| o.as_ref().map(|o| o.cloud_id.as_str()))
            .collect();
        let want: Vec<Option<&str>> = batch.iter().map(|b| Some(b.id.as_str())).collect();
        self.expect(ids == want, || {
            format!("observe must answer in the order asked: got {ids:?}, expected {want:?}")
        });
        if let Some(Some(o)) = seen.first() {
            self.agrees("observe", &made, o);
        }
        Ok(())
    }

    async fn update_case(&mut self, kind: Kind) -> Result<(), String> {
        let made = self.subject(kind, "subject").await?;
        let mut next = made.proposal.clone();
        next.tags.insert("suite".into(), "updated".into());
        next.tags.remove("stage");
        match &mut next.spec {
            Spec::Network(_) => {}
            Spec::Subnet(s) => s.public = !s.public,
            Spec::Firewall(f) => f.ingress.push(rule("tcp", 443, "0.0.0.0/0")),
            Spec::Instance(i) => i.instance_type = "t3.small".into(),
            Spec::Volume(v) => v.size_gib = 20,
        }
        let updated = self.update_with(&made, &next).await?;
        self.expect(updated.cloud_id == made.observed.cloud_id, || {
            format!(
                "an in-place update changed the id ({} → {})",
                made.observed.cloud_id, updated.cloud_id
            )
        });
        let after = Made {
            proposal: next,
            ..made
        };
        // The creation token stays: it identifies the create that made the resource.
        self.agrees("update", &after, &updated);
        match self.read(&updated).await? {
            Some(o) => self.agrees("read after update", &after, &o),
            None => self.failures.push("the updated resource is gone".into()),
        }
        Ok(())
    }

    async fn replace_case(&mut self, kind: Kind) -> Result<(), String> {
        let old = self.subject(kind, "subject").await?;
        self.p()
            .delete(&old.observed.at())
            .await
            .map_err(failed("delete the replaced resource"))?;
        let mut next = old.proposal.clone();
        match &mut next.spec {
            Spec::Network(n) => n.cidr = "10.43.0.0/16".into(),
            Spec::Subnet(s) => s.cidr = "10.42.2.0/24".into(),
            Spec::Volume(v) => v.zone = "b".into(),
            Spec::Firewall(_) | Spec::Instance(_) => {}
        }
        let new = self.make(old.address.clone(), next).await?;
        self.expect(new.observed.cloud_id != old.observed.cloud_id, || {
            format!(
                "the replacement reused the old id {}",
                old.observed.cloud_id
            )
        });
        self.agrees("replacement", &new, &new.observed.clone());
        let gone = self.read(&old.observed).await?;
        self.expect(gone.is_none(), || {
            "the replaced resource is still there".into()
        });
        let found = self
            .p()
            .find_by_token(kind, self.h.region(), &old.token)
            .await
            .map_err(failed("find_by_token of the replaced resource"))?;
        self.expect(found.is_none(), || {
            "find_by_token still finds the replaced resource".into()
        });
        Ok(())
    }

    async fn delete_case(&mut self, kind: Kind) -> Result<(), String> {
        let made = self.subject(kind, "subject").await?;
        let at = made.observed.at();
        self.p().delete(&at).await.map_err(failed("delete"))?;
        let read = self.read(&made.observed).await?;
        self.expect(read.is_none(), || {
            "a deleted resource must read as absent".into()
        });
        let seen = self
            .p()
            .observe(std::slice::from_ref(&at))
            .await
            .map_err(failed("observe after delete"))?;
        self.expect(matches!(seen.as_slice(), [None]), || {
            format!("observe must report a deleted resource as absent, got {seen:?}")
        });
        self.p()
            .delete(&at)
            .await
            .map_err(failed("deleting what is already gone"))?;
        Ok(())
    }

    async fn find_by_token_case(&mut self, kind: Kind) -> Result<(), String> {
        let spec = self.spec_of(kind, "subject").await?;
        let address = Address::new(kind, "subject");
        let proposal = owned(spec);
        let token = self.token("lost");
        // The create lands but its response is lost.
        let _ = self.create_with(&address, &proposal, &token).await?;
        let found = self
            .p()
            .find_by_token(kind, self.h.region(), &token)
            .await
            .map_err(failed("find_by_token"))?;
        let Some(found) = found else {
            self.failures
                .push("find_by_token must find what a create with the token made".into());
            return Ok(());
        };
        let made = Made {
            address: address.clone(),
            proposal: proposal.clone(),
            token: token.clone(),
            observed: found.clone(),
        };
        self.agrees("find_by_token", &made, &found);
        let retried = self.create_with(&address, &proposal, &token).await?;
        self.expect(retried.cloud_id == found.cloud_id, || {
            format!(
                "retrying the create made a duplicate ({} besides {})",
                retried.cloud_id, found.cloud_id
            )
        });
        let unused = self
            .p()
            .find_by_token(kind, self.h.region(), &format!("{}-never-used", self.stack))
            .await
            .map_err(failed("find_by_token of an unused token"))?;
        self.expect(unused.is_none(), || {
            "an unused token must find nothing".into()
        });
        Ok(())
    }

    async fn list_managed_case(&mut self, kind: Kind) -> Result<(), String> {
        let made = self.subject(kind, "subject").await?;
        // Another stack's resource must not be listed.
        let elsewhere = format!("{}-other", self.stack);
        let stack = std::mem::replace(&mut self.stack, elsewhere);
        let other = self.subject(Kind::Network, "elsewhere").await?;
        self.stack = stack;
        let listed = self
            .p()
            .list_managed(&self.stack)
            .await
            .map_err(failed("list_managed"))?;
        match listed.iter().find(|o| o.cloud_id == made.observed.cloud_id) {
            Some(o) => self.agrees("list_managed", &made, o),
            None => self
                .failures
                .push(format!("list_managed does not list {}", made.address)),
        }
        self.expect(
            listed.iter().all(|o| o.cloud_id != other.observed.cloud_id),
            || "list_managed lists another stack's resource".into(),
        );
        let own = listed
            .iter()
            .all(|o| o.tags.get(TAG_STACK) == Some(&self.stack));
        self.expect(own, || {
            "list_managed returned resources tagged for other stacks".into()
        });
        Ok(())
    }

    async fn drift_case(&mut self, kind: Kind) -> Result<(), String> {
        let made = self.subject(kind, "subject").await?;
        let at = made.observed.at();
        self.h
            .tag_out_of_band(&at, "owner", "someone-else")
            .await
            .map_err(|e| format!("changing the resource out of band failed: {e}"))?;
        let read = self.read(&made.observed).await?;
        self.expect(
            read.as_ref()
                .and_then(|o| o.tags.get("owner"))
                .is_some_and(|v| v == "someone-else"),
            || "read does not report a tag set out of band".into(),
        );
        let seen = self
            .p()
            .observe(std::slice::from_ref(&at))
            .await
            .map_err(failed("observe"))?;
        self.expect(
            seen.first()
                .and_then(Option::as_ref)
                .and_then(|o| o.tags.get("owner"))
                .is_some_and(|v| v == "someone-else"),
            || "observe does not report a tag set out of band".into(),
        );
        Ok(())
    }
}

fn owned(spec: Spec) -> Owned {
    Owned {
        spec,
        tags: [
            ("suite".to_string(), "conformance".to_string()),
            ("stage".to_string(), "test".to_string()),
        ]
        .into(),
    }
}

fn subnet_spec(network: &str, cidr: &str) -> SubnetSpec {
    SubnetSpec {
        network: network.into(),
        cidr: cidr.into(),
        zone: "a".into(),
        public: false,
    }
}

fn rule(protocol: &str, port: u16, cidr: &str) -> Rule {
    Rule {
        protocol: protocol.into(),
        from_port: Some(port),
        to_port: Some(port),
        cidrs: vec![cidr.into()],
        description: None,
    }
}
