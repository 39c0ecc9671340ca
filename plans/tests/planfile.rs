//! Plan files: sealed with a key (no plaintext, the key id named), refused without one when
//! the plan holds a sensitive value, plain JSON when it holds none; a wrong key, a tampered or
//! truncated file are diagnostics; rotation seals again with the new key.

mod common;

use chimera_model::codes;
use chimera_plans::PlanFile;
use chimera_seal::{Key, Keyring, Keys};

const SECRET: &str = "PASSWORD=plan-file-canary";

fn source(user_data: bool) -> String {
    let extra = if user_data {
        format!(", user_data = \"{SECRET}\"")
    } else {
        String::new()
    };
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & {{ name = "web", network = net, cidr = "10.0.1.0/24" }} in
{{ stack = "shop", resources = [net, sn, c.Instance & {{ name = "web-0", size = 'small, subnet = sn{extra} }}] }}
"#
    )
}

fn file(user_data: bool) -> PlanFile {
    PlanFile {
        plan: common::fresh(&source(user_data)),
        state_url: "sqlite:///tmp/state.db".into(),
        local_cloud: "/tmp/cloud.db".into(),
        policies: String::new(),
    }
}

fn key() -> Key {
    Key::from_base64(&Key::generate().unwrap(), "test").unwrap()
}

fn has(bytes: &[u8], s: &str) -> bool {
    bytes.windows(s.len()).any(|w| w == s.as_bytes())
}

#[test]
fn a_plan_with_a_secret_is_sealed_with_a_key_and_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.plan");
    let f = file(true);
    assert_eq!(
        f.sensitive_values(),
        vec![("instance.web-0".to_string(), "user_data".to_string())]
    );
    let d = f.write(&path, &Keys::None).unwrap_err();
    assert_eq!(d.code, codes::KEY_MISSING);
    assert!(!path.exists());

    let keys = Keys::ring(Keyring::new(key(), None));
    f.write(&path, &keys).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(chimera_seal::is_sealed(&bytes));
    assert!(!has(&bytes, SECRET));
    let back = PlanFile::read(&path, &keys).unwrap();
    assert_eq!(back.plan, f.plan);
    assert_eq!(back.state_url, f.state_url);

    assert_eq!(
        PlanFile::read(&path, &Keys::None).unwrap_err().code,
        codes::KEY_MISSING
    );
    let other = Keys::ring(Keyring::new(key(), None));
    let d = PlanFile::read(&path, &other).unwrap_err();
    assert_eq!(d.code, codes::KEY_UNKNOWN);
    assert!(
        d.detail.contains(keys.usable().unwrap().key_id()),
        "{}",
        d.detail
    );

    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    assert_eq!(
        PlanFile::read(&path, &keys).unwrap_err().code,
        codes::SEALED_TAMPERED
    );
}

#[test]
fn rotation_seals_a_plan_file_again_with_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.plan");
    let old_text = Key::generate().unwrap();
    let old = Keys::ring(Keyring::new(
        Key::from_base64(&old_text, "old").unwrap(),
        None,
    ));
    file(true).write(&path, &old).unwrap();
    let rotating = Keyring::new(key(), Some(Key::from_base64(&old_text, "old").unwrap()));
    assert!(PlanFile::reseal(&path, &rotating).unwrap());
    assert!(!PlanFile::reseal(&path, &rotating).unwrap(), "once");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        chimera_seal::key_id_of(&bytes).as_deref(),
        Some(rotating.key_id())
    );
    assert_eq!(
        PlanFile::read(&path, &old).unwrap_err().code,
        codes::KEY_UNKNOWN
    );
    let new_only = Keys::ring(rotating);
    assert!(PlanFile::read(&path, &new_only).is_ok());
}

#[test]
fn a_plan_without_a_secret_stays_json_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.plan");
    let f = file(false);
    assert!(f.sensitive_values().is_empty());
    f.write(&path, &Keys::None).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"chimera_plan_file\""));
    assert_eq!(PlanFile::read(&path, &Keys::None).unwrap().plan, f.plan);
    // Edited: the integrity check still refuses it.
    std::fs::write(&path, text.replace("10.0.1.0/24", "10.0.9.0/24")).unwrap();
    assert_eq!(
        PlanFile::read(&path, &Keys::None).unwrap_err().code,
        codes::INVALID_PLAN_FILE
    );
}
