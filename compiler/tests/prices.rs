//! The price catalog (`stdlib/prices.json` through `chimera_compiler::prices`): it prices every
//! type the stdlib catalog names in every native region the catalog maps, regional prices reach
//! `monthly_cost` and `fit_instance_type`, and `scripts/refresh-prices.py` rebuilds it from
//! recorded responses.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chimera_compiler::catalog::Catalog;
use chimera_compiler::eval::evaluate;
use chimera_compiler::prices::{HOURS_PER_MONTH, Prices, prices};
use chimera_compiler::{EvalOptions, Overlay, Source, compile_from};
use chimera_model::ProviderName::{self, Aws, Azure, Gcp, Local};
use chimera_model::kinds::{InstanceSpec, NetworkSpec, Spec, SubnetSpec, VolumeSpec};

const CLOUDS: [ProviderName; 3] = [Aws, Gcp, Azure];

/// The stdlib catalog as the compiler reads it, evaluated through a one-network stack.
fn catalog() -> Catalog {
    let main = r#"let c = import "chimera.ncl" in
{ stack = "prices", resources = [c.Network & { name = "main", cidr = "10.0.0.0/16" }] }
"#;
    let dir = tempfile::tempdir().unwrap();
    let src: Arc<dyn Source> = Arc::new(Overlay::new(dir.path(), [("main.ncl", main)]));
    let out = evaluate(&src, &dir.path().join("main.ncl"), &EvalOptions::default());
    let ev = out
        .result
        .unwrap_or_else(|d| panic!("{}", out.sources.render(&d, false)));
    serde_json::from_value(ev.catalog).unwrap()
}

/// Every (native region, instance types, disk types) the catalog maps for `p`.
fn mapped(c: &Catalog, p: ProviderName) -> Vec<(String, Vec<String>, Vec<String>)> {
    let types: Vec<String> = c.instance_types[p.as_str()].keys().cloned().collect();
    let disks: Vec<String> = c
        .volume_types
        .values()
        .filter_map(|m| m.get(p.as_str()).map(|d| d.native.clone()))
        .collect();
    c.regions
        .values()
        .filter_map(|m| m.get(p.as_str()))
        .map(|r| (r.clone(), types.clone(), disks.clone()))
        .collect()
}

fn instance(ty: &str) -> Spec {
    Spec::Instance(InstanceSpec {
        size: None,
        cpu: None,
        memory_gib: None,
        instance_type: ty.into(),
        image: "ubuntu-24.04".into(),
        image_ref: serde_json::Value::Null,
        subnet: String::new(),
        firewalls: Vec::new(),
        public_ip: false,
        user_data: None,
    })
}

fn volume(disk_type: &str, size_gib: u32) -> Spec {
    Spec::Volume(VolumeSpec {
        size_gib,
        volume_type: "ssd".into(),
        disk_type: disk_type.into(),
        zone: "a".into(),
        encrypted: true,
        instance: None,
    })
}

#[test]
fn every_mapped_region_prices_every_type_the_catalog_names() {
    let c = catalog();
    let mut missing = Vec::new();
    let mut count = 0;
    for p in CLOUDS {
        for (region, types, disks) in mapped(&c, p) {
            for t in &types {
                count += 1;
                match prices().instance_hourly(p, &region, t) {
                    Some(h) if h > 0.0 && h.is_finite() => {}
                    other => missing.push(format!("{p} {region} instance {t}: {other:?}")),
                }
            }
            for d in &disks {
                count += 1;
                match prices().disk_gib_month(p, &region, d) {
                    Some(g) if g > 0.0 && g.is_finite() => {}
                    other => missing.push(format!("{p} {region} disk {d}: {other:?}")),
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "stdlib/prices.json lacks a positive price for:\n{}",
        missing.join("\n")
    );
    assert!(count > 200, "{count}");
}

#[test]
fn the_price_file_holds_no_region_the_catalog_does_not_map() {
    let c = catalog();
    for p in CLOUDS {
        let mapped: Vec<String> = mapped(&c, p).into_iter().map(|(r, _, _)| r).collect();
        for r in prices().regions(p) {
            assert!(
                mapped.iter().any(|m| m == r),
                "{p} {r} is priced but not in catalog.ncl"
            );
        }
    }
    assert_eq!(prices().regions(Local).count(), 0);
}

#[test]
fn sources_are_dated_and_say_where_they_come_from() {
    assert_eq!(prices().currency(), "USD");
    assert_eq!(HOURS_PER_MONTH, chimera_compiler::catalog::HOURS_PER_MONTH);
    let listed: Vec<ProviderName> = prices().sources().map(|s| s.provider).collect();
    assert_eq!(listed, CLOUDS);
    for p in CLOUDS {
        let s = prices().source(p).unwrap();
        assert_eq!(s.provider, p);
        assert!(s.url.starts_with("https://"), "{}", s.url);
        assert!(!s.source.is_empty() && !s.note.is_empty());
        let d: Vec<&str> = s.retrieved.split('-').collect();
        assert!(
            d.len() == 3 && d.iter().zip([4, 2, 2]).all(|(x, n)| x.len() == n),
            "{p} retrieved {:?} is not YYYY-MM-DD",
            s.retrieved
        );
    }
    assert!(prices().source(Local).is_none());
}

#[test]
fn local_is_free_everywhere() {
    let p = prices();
    assert_eq!(
        p.instance_hourly(Local, "local-us-east", "local.micro"),
        Some(0.0)
    );
    assert_eq!(p.instance_hourly(Local, "anywhere", "anything"), Some(0.0));
    assert_eq!(
        p.disk_gib_month(Local, "local-sa-east", "local-ssd"),
        Some(0.0)
    );
    assert_eq!(
        p.monthly(Local, "local-eu-west", &instance("local.2xlarge")),
        Some(0.0)
    );
    assert_eq!(
        p.monthly(Local, "local-eu-west", &volume("local-ssd", 500)),
        Some(0.0)
    );
}

#[test]
fn farther_regions_cost_at_least_us_east() {
    let c = catalog();
    let native = |region: &str, p: ProviderName| c.native_region(region, p).unwrap().to_string();
    for p in CLOUDS {
        let base = native("us-east", p);
        for far in ["sa-east", "ap-northeast", "ap-southeast", "eu-central"] {
            let far = native(far, p);
            for t in c.instance_types[p.as_str()].keys() {
                let (b, f) = (
                    prices().instance_hourly(p, &base, t).unwrap(),
                    prices().instance_hourly(p, &far, t).unwrap(),
                );
                assert!(f >= b, "{p} {t}: {far} {f} < {base} {b}");
            }
        }
        // São Paulo is dearer than Virginia for every type, on every cloud.
        let sa = native("sa-east", p);
        for t in c.instance_types[p.as_str()].keys() {
            assert!(
                prices().instance_hourly(p, &sa, t) > prices().instance_hourly(p, &base, t),
                "{p} {t}"
            );
        }
    }
}

#[test]
fn monthly_prices_one_resource() {
    let p = prices();
    let t3 = p.instance_hourly(Aws, "us-east-1", "t3.micro").unwrap();
    assert_eq!(
        p.monthly(Aws, "us-east-1", &instance("t3.micro")),
        Some(t3 * 730.0)
    );
    let sa = p.monthly(Aws, "sa-east-1", &instance("t3.micro")).unwrap();
    assert!(sa > t3 * 730.0);

    let gp3 = p.disk_gib_month(Aws, "eu-west-1", "gp3").unwrap();
    assert_eq!(
        p.monthly(Aws, "eu-west-1", &volume("gp3", 100)),
        Some(gp3 * 100.0)
    );
    let pd = p.disk_gib_month(Gcp, "europe-west3", "pd-ssd").unwrap();
    assert_eq!(
        p.monthly(Gcp, "europe-west3", &volume("pd-ssd", 10)),
        Some(pd * 10.0)
    );

    let net = Spec::Network(NetworkSpec {
        cidr: "10.0.0.0/16".into(),
    });
    let subnet = Spec::Subnet(SubnetSpec {
        network: String::new(),
        cidr: "10.0.1.0/24".into(),
        zone: "a".into(),
        public: false,
    });
    for cloud in CLOUDS {
        assert_eq!(p.monthly(cloud, "anywhere", &net), Some(0.0));
        assert_eq!(p.monthly(cloud, "anywhere", &subnet), Some(0.0));
    }

    // Unpriced is None, never 0.
    assert_eq!(p.monthly(Aws, "us-east-1", &instance("x9.huge")), None);
    assert_eq!(p.monthly(Aws, "mars-north-1", &instance("t3.micro")), None);
    assert_eq!(
        p.monthly(Azure, "eastus", &volume("UltraSSD_LRS", 10)),
        None
    );
    assert_eq!(p.instance_hourly(Gcp, "eastus", "e2-micro"), None);
}

#[test]
fn fit_instance_type_picks_by_the_regional_price() {
    let c = catalog();
    let requests = [
        (1.0, 0.5),
        (2.0, 1.0),
        (2.0, 4.0),
        (2.0, 8.0),
        (2.0, 16.0),
        (4.0, 8.0),
    ];
    for p in CLOUDS {
        for (region, types, _) in mapped(&c, p) {
            for (cpu, mem) in requests {
                let fits = types.iter().filter(|t| {
                    let it = c.instance_type(p, t).unwrap();
                    it.cpu >= cpu && it.memory_gib >= mem
                });
                let cheapest = fits
                    .map(|t| (prices().instance_hourly(p, &region, t).unwrap(), t))
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                let got = c.fit_instance_type(p, &region, cpu, mem);
                let want_price = cheapest.map(|(h, _)| h);
                let got_price = got.map(|t| prices().instance_hourly(p, &region, t).unwrap());
                assert_eq!(
                    got_price, want_price,
                    "{p} {region} {cpu} vCPU {mem} GiB: {got:?}"
                );
            }
        }
    }
    // A region without prices still gets the smallest type that fits, not none.
    assert_eq!(
        c.fit_instance_type(Aws, "nowhere-1", 2.0, 4.0),
        Some("c7g.large")
    );
    assert_eq!(c.fit_instance_type(Aws, "nowhere-1", 64.0, 4.0), None);
}

#[test]
fn a_compiled_stack_costs_its_regional_price() {
    let main = r#"let c = import "chimera.ncl" in
let net = c.Network & { name = "main", cidr = "10.0.0.0/16", provider = 'aws, region = "sa-east" } in
let sub = c.Subnet & { name = "a", network = net.outputs.id, cidr = "10.0.1.0/24", provider = 'aws, region = "sa-east" } in
{ stack = "priced", resources = [ net, sub,
  c.Instance & { name = "web", size = 'micro, subnet = sub.outputs.id, provider = 'aws, region = "sa-east" },
  c.Instance & { name = "fit", cpu = 2, memory_gib = 4, subnet = sub.outputs.id, provider = 'aws, region = "sa-east" },
  c.Volume & { name = "data", size_gib = 50, provider = 'aws, region = "sa-east" } ] }
"#;
    let dir = tempfile::tempdir().unwrap();
    let src: Arc<dyn Source> = Arc::new(Overlay::new(dir.path(), [("main.ncl", main)]));
    let compiled = compile_from(&src, &dir.path().join("main.ncl"), &EvalOptions::default());
    let g = compiled.graph.as_ref().unwrap_or_else(|| {
        panic!("{}", compiled.sources.render(&compiled.diagnostics, false));
    });
    let cost = |name: &str| {
        let r = g.resources.iter().find(|r| r.address.name == name).unwrap();
        assert_eq!(r.native_region, "sa-east-1");
        r.monthly_cost
    };
    let hourly = |t: &str| prices().instance_hourly(Aws, "sa-east-1", t).unwrap();
    assert_eq!(cost("main"), 0.0);
    assert_eq!(cost("web"), hourly("t3.micro") * HOURS_PER_MONTH);
    assert_eq!(cost("fit"), hourly("t3.medium") * HOURS_PER_MONTH);
    let gp3 = prices().disk_gib_month(Aws, "sa-east-1", "gp3").unwrap();
    assert_eq!(cost("data"), gp3 * 50.0);
    assert!(
        cost("web")
            > prices()
                .instance_hourly(Aws, "us-east-1", "t3.micro")
                .unwrap()
                * 730.0
    );
}

/// `scripts/refresh-prices.py --from` rebuilds a price file from recorded API responses.
#[test]
fn the_refresh_script_replays_recorded_responses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    if Command::new("python3").arg("--version").output().is_err() {
        println!("skipped: python3 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prices.json");
    let run = Command::new("python3")
        .current_dir(root)
        .args([
            "scripts/refresh-prices.py",
            "--from",
            "scripts/fixtures/prices",
            "--out",
        ])
        .arg(&out)
        .args(["--retrieved", "2026-11-01"])
        .env_remove("GCP_API_KEY")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "refresh-prices.py failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let p = Prices::from_json(&text).unwrap();
    assert_eq!(p.currency(), "USD");
    // The recorded responses' prices, as the APIs state them.
    assert_eq!(
        p.instance_hourly(Aws, "us-east-1", "t3.micro"),
        Some(0.0104)
    );
    assert_eq!(
        p.instance_hourly(Aws, "sa-east-1", "m7i.large"),
        Some(0.1607)
    );
    assert_eq!(p.disk_gib_month(Aws, "sa-east-1", "gp3"), Some(0.152));
    assert_eq!(
        p.instance_hourly(Azure, "japaneast", "Standard_D2s_v5"),
        Some(0.124)
    );
    assert_eq!(
        p.instance_hourly(Azure, "eastus", "Standard_B1s"),
        Some(0.0104)
    );
    // Azure disks: the P10 tier's monthly price over its 128 GiB.
    assert_eq!(
        p.disk_gib_month(Azure, "eastus", "Premium_LRS"),
        Some(19.71 / 128.0)
    );
    // GCP: billed vCPUs × core rate + GiB × RAM rate.
    let n2 = p
        .instance_hourly(Gcp, "asia-northeast1", "n2-standard-2")
        .unwrap();
    assert!(
        (n2 - (2.0 * 0.040677 + 8.0 * 0.005452)).abs() < 1e-9,
        "{n2}"
    );
    let e2 = p.instance_hourly(Gcp, "us-east1", "e2-micro").unwrap();
    assert!((e2 - (0.25 * 0.021811 + 0.002923)).abs() < 1e-9, "{e2}");
    assert_eq!(
        p.disk_gib_month(Gcp, "asia-northeast1", "pd-ssd"),
        Some(0.221)
    );
    for cloud in CLOUDS {
        let s = p.source(cloud).unwrap();
        assert_eq!(s.retrieved, "2026-11-01");
    }
    // Deterministic: sorted keys, two-space indent, a final newline; a second run is identical.
    assert!(
        text.starts_with("{\n  \"currency\": \"USD\",\n"),
        "{}",
        &text[..40]
    );
    assert!(text.ends_with("}\n"));
    let again = dir.path().join("again.json");
    let rerun = Command::new("python3")
        .current_dir(root)
        .args([
            "scripts/refresh-prices.py",
            "--from",
            "scripts/fixtures/prices",
            "--out",
        ])
        .arg(&again)
        .args(["--retrieved", "2026-11-01"])
        .output()
        .unwrap();
    assert!(rerun.status.success());
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);
}
