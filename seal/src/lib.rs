//! Encryption at rest: what Chimera writes that may hold a sensitive value — saved plan files,
//! evaluation-cache graphs, sensitive values kept in state — is sealed in an **envelope**:
//! AES-256-GCM with a fresh 96-bit nonce, the id of the key that sealed it, and (for a
//! passphrase) the argon2id parameters and salt the key was derived with. The envelope's
//! header (purpose, key id, KDF) is authenticated with the ciphertext, so an envelope cannot be
//! passed off as another kind of data or another key's, and any edited byte is refused.
//!
//! Keys come from a key file, an environment variable (32 bytes, base64) or a passphrase
//! (argon2id). A [`Keyring`] seals with its key and opens with it or with a fallback key, as
//! OpenTofu's state encryption does: rotating is configuring the new key with the old one as
//! the fallback and rewriting what is sealed. docs/security.md has the threat model.
//!
//! This crate never reads the environment itself: [`Keys::from_lookup`] is given a lookup
//! (the CLI passes its environment and flags).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::Nonce;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chimera_model::{Diagnostic, codes};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The envelope format this build writes and reads.
pub const ENVELOPE_VERSION: u64 = 1;
/// The one algorithm envelopes use.
pub const ALGORITHM: &str = "AES-256-GCM";

/// What an envelope holds; bound into its authentication.
pub mod purpose {
    /// A saved plan file (`chimera plan --out`).
    pub const PLAN_FILE: &str = "plan-file";
    /// An evaluation-cache graph (`.chimera/cache/*.graph.json`).
    pub const CACHE_GRAPH: &str = "cache-graph";
    /// One sensitive value kept in state.
    pub const STATE_VALUE: &str = "state-value";
}

/// The environment variables (or flags) a key is read from: a base64 key, a key file, a
/// passphrase; the fallback key's likewise.
pub const KEY_VARS: [&str; 3] = ["CHIMERA_KEY", "CHIMERA_KEY_FILE", "CHIMERA_PASSPHRASE"];
pub const FALLBACK_VARS: [&str; 3] = [
    "CHIMERA_FALLBACK_KEY",
    "CHIMERA_FALLBACK_KEY_FILE",
    "CHIMERA_FALLBACK_PASSPHRASE",
];

/// argon2id cost for passphrases (OWASP's recommended minimum: 19 MiB, 2 passes, 1 lane).
const ARGON2_M_KIB: u32 = 19 * 1024;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;
/// The salt a passphrase's key id is derived with (the id must be the same in every process).
const KEY_ID_SALT: &[u8] = b"chimera-seal/key-id/v1";

/// A sealed value as written: JSON, so a file says what it is and which key opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub chimera_sealed: u64,
    pub alg: String,
    pub purpose: String,
    /// The id of the key that sealed it (`k-…` a key, `p-…` a passphrase).
    pub kid: String,
    /// How a passphrase's key was derived (absent for a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Kdf>,
    pub nonce: String,
    pub ciphertext: String,
}

/// argon2id parameters and salt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Kdf {
    pub alg: String,
    pub m: u32,
    pub t: u32,
    pub p: u32,
    pub salt: String,
}

impl Envelope {
    fn aad(&self) -> Vec<u8> {
        let kdf = self
            .kdf
            .as_ref()
            .map(|k| format!("{}:{}:{}:{}:{}", k.alg, k.m, k.t, k.p, k.salt))
            .unwrap_or_default();
        format!(
            "chimera-seal/v{}\n{}\n{}\n{}\n{kdf}",
            self.chimera_sealed, self.alg, self.purpose, self.kid
        )
        .into_bytes()
    }
}

/// Why sealed data could not be opened (or sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// Sealed data, and no key configured.
    NoKey { kid: String },
    /// Sealed with a key that is not configured.
    UnknownKey {
        kid: String,
        configured: Vec<String>,
    },
    /// Authentication failed: edited, truncated, damaged, or another kind of data.
    Tampered(String),
    /// The system's random source failed.
    Random(String),
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::NoKey { kid } => write!(
                f,
                "it is encrypted (key id `{kid}`) and no key is configured; set CHIMERA_KEY_FILE (or --key-file), CHIMERA_KEY or CHIMERA_PASSPHRASE to the key it was sealed with"
            ),
            SealError::UnknownKey { kid, configured } => write!(
                f,
                "it was sealed with key `{kid}`, but the configured key{} `{}`; configure that key, or make it the fallback key (CHIMERA_FALLBACK_KEY_FILE, CHIMERA_FALLBACK_KEY, CHIMERA_FALLBACK_PASSPHRASE) while rotating",
                if configured.len() == 1 {
                    " is"
                } else {
                    "s are"
                },
                configured.join("`, `")
            ),
            SealError::Tampered(why) => write!(
                f,
                "its encryption does not authenticate ({why}): it was edited, truncated or damaged after it was written"
            ),
            SealError::Random(why) => write!(f, "the system's random source failed ({why})"),
        }
    }
}

impl std::error::Error for SealError {}

impl SealError {
    /// The diagnostic for `what` (e.g. "plan file `plan.bin`") failing to open.
    pub fn diagnostic(&self, what: &str) -> Diagnostic {
        let (code, summary) = match self {
            SealError::NoKey { .. } => (codes::KEY_MISSING, "no encryption key configured"),
            SealError::UnknownKey { .. } => (codes::KEY_UNKNOWN, "sealed with another key"),
            SealError::Tampered(_) => (codes::SEALED_TAMPERED, "encrypted data was tampered with"),
            SealError::Random(_) => (codes::KEY_INVALID, "cannot encrypt"),
        };
        Diagnostic::error(code, summary).detail(format!("{what}: {self}"))
    }
}

enum Material {
    Raw(Zeroizing<[u8; 32]>),
    Passphrase {
        phrase: Zeroizing<Vec<u8>>,
        /// The salt this process seals with (random, chosen once: one derivation per run).
        seal_salt: [u8; 16],
        /// Keys derived so far, by salt (each derivation costs ~19 MiB and tens of ms).
        derived: Mutex<HashMap<Vec<u8>, Zeroizing<[u8; 32]>>>,
    },
}

/// One key: its id and its material (never printed).
pub struct Key {
    id: String,
    material: Material,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

fn invalid(summary: &str, detail: String) -> Box<Diagnostic> {
    Box::new(Diagnostic::error(codes::KEY_INVALID, summary).detail(detail))
}

fn random<const N: usize>() -> Result<[u8; N], SealError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(b)
}

fn argon2id(
    phrase: &[u8],
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| e.to_string())?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(phrase, salt, &mut out[..])
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn key_id(prefix: &str, material: &[u8; 32]) -> String {
    let h = blake3::derive_key("chimera-seal 2026 key id", material);
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

impl Key {
    /// A key given as base64 text (32 bytes); `origin` names where it came from.
    pub fn from_base64(text: &str, origin: &str) -> Result<Key, Box<Diagnostic>> {
        let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| {
            invalid(
                "invalid encryption key",
                format!(
                    "{origin} is not base64; make a key with `head -c 32 /dev/urandom | base64`"
                ),
            )
        })?);
        let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            invalid(
                "invalid encryption key",
                format!(
                    "{origin} holds {} bytes, not the 32 an AES-256 key needs; make a key with `head -c 32 /dev/urandom | base64`",
                    bytes.len()
                ),
            )
        })?;
        Ok(Key {
            id: key_id("k", &raw),
            material: Material::Raw(Zeroizing::new(raw)),
        })
    }

    /// A key read from a file holding its base64 text.
    pub fn from_file(path: &Path) -> Result<Key, Box<Diagnostic>> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            invalid(
                "cannot read the encryption key file",
                format!("`{}`: {e}", path.display()),
            )
        })?);
        Key::from_base64(&text, &format!("the key file `{}`", path.display()))
    }

    /// A key derived from a passphrase with argon2id (a salt per envelope, recorded in it).
    pub fn from_passphrase(phrase: &str, origin: &str) -> Result<Key, Box<Diagnostic>> {
        if phrase.trim().is_empty() {
            return Err(invalid(
                "invalid encryption passphrase",
                format!("{origin} is empty"),
            ));
        }
        let id_key = argon2id(
            phrase.as_bytes(),
            KEY_ID_SALT,
            ARGON2_M_KIB,
            ARGON2_T,
            ARGON2_P,
        )
        .map_err(|e| invalid("cannot derive the passphrase's key", e))?;
        let seal_salt = random::<16>()
            .map_err(|e| invalid("cannot derive the passphrase's key", e.to_string()))?;
        Ok(Key {
            id: key_id("p", &id_key),
            material: Material::Passphrase {
                phrase: Zeroizing::new(phrase.as_bytes().to_vec()),
                seal_salt,
                derived: Mutex::new(HashMap::new()),
            },
        })
    }

    /// A new random key, as base64 text (for a key file).
    pub fn generate() -> Result<String, SealError> {
        let raw = Zeroizing::new(random::<32>()?);
        Ok(B64.encode(&raw[..]))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The AES key for `kdf` (a raw key ignores it).
    fn cipher_key(&self, kdf: Option<&Kdf>) -> Result<Zeroizing<[u8; 32]>, SealError> {
        match (&self.material, kdf) {
            (Material::Raw(k), None) => Ok(k.clone()),
            (Material::Raw(_), Some(_)) => Err(SealError::Tampered(
                "a key's envelope names a key derivation".into(),
            )),
            (Material::Passphrase { .. }, None) => Err(SealError::Tampered(
                "a passphrase's envelope names no key derivation".into(),
            )),
            (
                Material::Passphrase {
                    phrase, derived, ..
                },
                Some(kdf),
            ) => {
                if kdf.alg != "argon2id" {
                    return Err(SealError::Tampered(format!("unknown KDF `{}`", kdf.alg)));
                }
                // Bounded, so a forged header cannot make us allocate without end.
                if kdf.m > 1024 * 1024 || kdf.t > 16 || kdf.p > 16 {
                    return Err(SealError::Tampered("KDF parameters out of range".into()));
                }
                let salt = B64
                    .decode(&kdf.salt)
                    .map_err(|_| SealError::Tampered("salt is not base64".into()))?;
                let mut cache = derived.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(k) = cache.get(&salt) {
                    return Ok(k.clone());
                }
                let k =
                    argon2id(phrase, &salt, kdf.m, kdf.t, kdf.p).map_err(SealError::Tampered)?;
                cache.insert(salt, k.clone());
                Ok(k)
            }
        }
    }

    fn seal_kdf(&self) -> Option<Kdf> {
        match &self.material {
            Material::Raw(_) => None,
            Material::Passphrase { seal_salt, .. } => Some(Kdf {
                alg: "argon2id".into(),
                m: ARGON2_M_KIB,
                t: ARGON2_T,
                p: ARGON2_P,
                salt: B64.encode(seal_salt),
            }),
        }
    }
}

/// The key that seals, and optionally a fallback that only opens (rotation).
#[derive(Debug)]
pub struct Keyring {
    primary: Key,
    fallback: Option<Key>,
}

/// What [`Keyring::open`] found.
pub struct Opened {
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The key id the envelope names.
    pub kid: String,
}

impl Keyring {
    pub fn new(primary: Key, fallback: Option<Key>) -> Keyring {
        Keyring { primary, fallback }
    }

    /// The id of the key that seals.
    pub fn key_id(&self) -> &str {
        self.primary.id()
    }

    fn ids(&self) -> Vec<String> {
        std::iter::once(&self.primary)
            .chain(self.fallback.as_ref())
            .map(|k| k.id.clone())
            .collect()
    }

    /// Seals `plaintext` as `purpose`: the envelope's JSON text.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let kdf = self.primary.seal_kdf();
        let key = self.primary.cipher_key(kdf.as_ref())?;
        let nonce = random::<12>()?;
        let mut env = Envelope {
            chimera_sealed: ENVELOPE_VERSION,
            alg: ALGORITHM.into(),
            purpose: purpose.into(),
            kid: self.primary.id.clone(),
            kdf,
            nonce: B64.encode(nonce),
            ciphertext: String::new(),
        };
        let aad = env.aad();
        let k: &[u8; 32] = &key;
        let cipher = Aes256Gcm::new(k.into());
        let ct = cipher
            .encrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Random("AES-GCM refused to encrypt".into()))?;
        env.ciphertext = B64.encode(ct);
        serde_json::to_string(&env).map_err(|e| SealError::Random(e.to_string()))
    }

    /// Opens an envelope of `purpose` with the key or the fallback key, by its key id.
    pub fn open(&self, purpose: &str, text: &[u8]) -> Result<Opened, SealError> {
        let env = parse(text)?;
        let key = std::iter::once(&self.primary)
            .chain(self.fallback.as_ref())
            .find(|k| k.id == env.kid)
            .ok_or_else(|| SealError::UnknownKey {
                kid: env.kid.clone(),
                configured: self.ids(),
            })?;
        if env.purpose != purpose {
            return Err(SealError::Tampered(format!(
                "it holds a {}, not a {purpose}",
                env.purpose
            )));
        }
        let cipher_key = key.cipher_key(env.kdf.as_ref())?;
        let nonce: [u8; 12] = B64
            .decode(&env.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| SealError::Tampered("the nonce is malformed".into()))?;
        let ct = B64
            .decode(&env.ciphertext)
            .map_err(|_| SealError::Tampered("the ciphertext is not base64".into()))?;
        let k: &[u8; 32] = &cipher_key;
        let cipher = Aes256Gcm::new(k.into());
        let plaintext = cipher
            .decrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: &ct,
                    aad: &env.aad(),
                },
            )
            .map_err(|_| SealError::Tampered("authentication tag mismatch".into()))?;
        Ok(Opened {
            plaintext: Zeroizing::new(plaintext),
            kid: env.kid,
        })
    }

    /// Opens an envelope and seals its content again with the key: `None` when it is sealed
    /// with the key already.
    pub fn reseal(&self, purpose: &str, text: &[u8]) -> Result<Option<String>, SealError> {
        let opened = self.open(purpose, text)?;
        if opened.kid == self.primary.id {
            return Ok(None);
        }
        self.seal(purpose, &opened.plaintext).map(Some)
    }
}

/// Parses an envelope (the well-formedness checks only).
fn parse(text: &[u8]) -> Result<Envelope, SealError> {
    let env: Envelope = serde_json::from_slice(text)
        .map_err(|e| SealError::Tampered(format!("not a well-formed envelope: {e}")))?;
    if env.chimera_sealed != ENVELOPE_VERSION || env.alg != ALGORITHM {
        return Err(SealError::Tampered(format!(
            "envelope version {} / {} is not one this build reads",
            env.chimera_sealed, env.alg
        )));
    }
    Ok(env)
}

/// Whether `bytes` are an envelope, by its marker field near the start (so a truncated,
/// damaged or re-serialised envelope is still recognised, and refused as such rather than
/// misread as something else). Documents Chimera writes otherwise never name this field.
pub fn is_sealed(bytes: &[u8]) -> bool {
    let marker = b"\"chimera_sealed\"";
    let head = &bytes[..bytes.len().min(1024)];
    head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && head.windows(marker.len()).any(|w| w == marker)
}

/// The key id an envelope names, if `bytes` are one.
pub fn key_id_of(bytes: &[u8]) -> Option<String> {
    parse(bytes).ok().map(|e| e.kid)
}

/// The keys of a run as the caller configured them: none, a keyring, or a configuration that
/// is invalid (reported when something needs a key, so a run that needs none is not stopped).
#[derive(Clone, Default)]
pub enum Keys {
    #[default]
    None,
    Ring(Arc<Keyring>),
    Invalid(Arc<Diagnostic>),
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keys::None => f.write_str("Keys::None"),
            Keys::Ring(r) => write!(f, "Keys::Ring({:?})", r.ids()),
            Keys::Invalid(_) => f.write_str("Keys::Invalid"),
        }
    }
}

impl Keys {
    pub fn ring(ring: Keyring) -> Keys {
        Keys::Ring(Arc::new(ring))
    }

    /// The keyring, `None` when no key is configured, or the configuration's diagnostic.
    pub fn get(&self) -> Result<Option<&Keyring>, Box<Diagnostic>> {
        match self {
            Keys::None => Ok(None),
            Keys::Ring(r) => Ok(Some(r.as_ref())),
            Keys::Invalid(d) => Err(Box::new((**d).clone())),
        }
    }

    /// The keyring when one is configured and valid.
    pub fn usable(&self) -> Option<&Keyring> {
        match self {
            Keys::Ring(r) => Some(r.as_ref()),
            _ => None,
        }
    }

    /// Opens `text` as `purpose`; with no key configured, [`SealError::NoKey`].
    pub fn open(&self, purpose: &str, text: &[u8]) -> Result<Opened, SealError> {
        match self.usable() {
            Some(r) => r.open(purpose, text),
            None => Err(SealError::NoKey {
                kid: key_id_of(text).unwrap_or_else(|| "?".into()),
            }),
        }
    }

    /// Reads the keys from `lookup` (the environment's names in [`KEY_VARS`] and
    /// [`FALLBACK_VARS`]): at most one source per key, and a fallback only with a key.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Keys {
        match Self::try_lookup(&lookup) {
            Ok(None) => Keys::None,
            Ok(Some(r)) => Keys::ring(r),
            Err(d) => Keys::Invalid(Arc::new(*d)),
        }
    }

    fn try_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Keyring>, Box<Diagnostic>> {
        let one = |vars: &[&str; 3]| -> Result<Option<Key>, Box<Diagnostic>> {
            let set: Vec<(&str, Zeroizing<String>)> = vars
                .iter()
                .filter_map(|v| Some((*v, Zeroizing::new(lookup(v).filter(|s| !s.is_empty())?))))
                .collect();
            match set.as_slice() {
                [] => Ok(None),
                [(name, value)] if *name == vars[0] => {
                    Key::from_base64(value, &format!("`{name}`")).map(Some)
                }
                [(name, value)] if *name == vars[1] => {
                    Key::from_file(Path::new(value.as_str())).map(Some)
                }
                [(name, value)] => Key::from_passphrase(value, &format!("`{name}`")).map(Some),
                more => Err(invalid(
                    "two sources for one encryption key",
                    format!(
                        "{} are all set; set only one of them",
                        more.iter()
                            .map(|(n, _)| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        };
        let primary = one(&KEY_VARS)?;
        let fallback = one(&FALLBACK_VARS)?;
        match (primary, fallback) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(invalid(
                "a fallback key without a key",
                "a fallback key only opens what an old key sealed; set the new key too (CHIMERA_KEY_FILE, CHIMERA_KEY or CHIMERA_PASSPHRASE)".into(),
            )),
            (Some(p), f) => Ok(Some(Keyring::new(p, f))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_base64(&Key::generate().unwrap(), "test").unwrap()
    }

    #[test]
    fn sealed_text_opens_with_the_key_and_holds_no_plaintext() {
        let ring = Keyring::new(key(), None);
        let sealed = ring.seal(purpose::PLAN_FILE, b"hunter2-secret").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert!(is_sealed(sealed.as_bytes()));
        assert_eq!(key_id_of(sealed.as_bytes()).as_deref(), Some(ring.key_id()));
        let opened = ring.open(purpose::PLAN_FILE, sealed.as_bytes()).unwrap();
        assert_eq!(opened.plaintext.as_slice(), b"hunter2-secret");
        // Two seals of one value differ (fresh nonce).
        assert_ne!(
            sealed,
            ring.seal(purpose::PLAN_FILE, b"hunter2-secret").unwrap()
        );
    }

    #[test]
    fn another_key_is_named_and_a_fallback_opens_and_reseals() {
        let old = Keyring::new(key(), None);
        let sealed = old.seal(purpose::STATE_VALUE, b"v").unwrap();
        let new_only = Keyring::new(key(), None);
        match new_only.open(purpose::STATE_VALUE, sealed.as_bytes()) {
            Err(SealError::UnknownKey { kid, configured }) => {
                assert_eq!(kid, old.key_id());
                assert_eq!(configured, vec![new_only.key_id().to_string()]);
            }
            other => panic!("{:?}", other.map(|o| o.kid)),
        }
        let old_key = Key::from_base64(
            &B64.encode(match &old.primary.material {
                Material::Raw(k) => **k,
                Material::Passphrase { .. } => unreachable!(),
            }),
            "old",
        )
        .unwrap();
        let rotating = Keyring::new(key(), Some(old_key));
        let resealed = rotating
            .reseal(purpose::STATE_VALUE, sealed.as_bytes())
            .unwrap()
            .expect("resealed with the new key");
        assert_eq!(
            key_id_of(resealed.as_bytes()).as_deref(),
            Some(rotating.key_id())
        );
        assert_eq!(
            rotating
                .reseal(purpose::STATE_VALUE, resealed.as_bytes())
                .unwrap(),
            None
        );
    }

    #[test]
    fn every_edited_byte_and_another_purpose_are_refused() {
        let ring = Keyring::new(key(), None);
        let sealed = ring.seal(purpose::CACHE_GRAPH, b"{\"a\":1}").unwrap();
        let mut env: Envelope = serde_json::from_str(&sealed).unwrap();
        let mut ct = B64.decode(&env.ciphertext).unwrap();
        ct[0] ^= 1;
        env.ciphertext = B64.encode(&ct);
        let edited = serde_json::to_string(&env).unwrap();
        assert!(matches!(
            ring.open(purpose::CACHE_GRAPH, edited.as_bytes()),
            Err(SealError::Tampered(_))
        ));
        assert!(matches!(
            ring.open(purpose::PLAN_FILE, sealed.as_bytes()),
            Err(SealError::Tampered(_))
        ));
        assert!(matches!(
            ring.open(purpose::CACHE_GRAPH, &sealed.as_bytes()[..sealed.len() / 2]),
            Err(SealError::Tampered(_))
        ));
        // Re-serialised with its fields in another order, it is still an envelope that opens.
        let reordered =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&sealed).unwrap())
                .unwrap();
        assert!(!reordered.starts_with("{\"chimera_sealed\""));
        assert!(is_sealed(reordered.as_bytes()));
        assert!(
            ring.open(purpose::CACHE_GRAPH, reordered.as_bytes())
                .is_ok()
        );
        assert!(!is_sealed(b"{\"chimera_plan_file\": 2}"));
        let d = SealError::Tampered("x".into()).diagnostic("plan file `p`");
        assert_eq!(d.code, codes::SEALED_TAMPERED);
    }

    #[test]
    fn a_passphrase_derives_the_same_key_id_and_opens_across_processes() {
        let a = Keyring::new(Key::from_passphrase("correct horse", "t").unwrap(), None);
        let b = Keyring::new(Key::from_passphrase("correct horse", "t").unwrap(), None);
        assert_eq!(a.key_id(), b.key_id());
        assert!(a.key_id().starts_with("p-"));
        let sealed = a.seal(purpose::PLAN_FILE, b"x").unwrap();
        assert!(sealed.contains("argon2id"));
        assert_eq!(
            b.open(purpose::PLAN_FILE, sealed.as_bytes())
                .unwrap()
                .plaintext
                .as_slice(),
            b"x"
        );
        let c = Keyring::new(Key::from_passphrase("wrong horse", "t").unwrap(), None);
        assert!(matches!(
            c.open(purpose::PLAN_FILE, sealed.as_bytes()),
            Err(SealError::UnknownKey { .. })
        ));
    }

    #[test]
    fn lookup_reads_one_source_per_key_and_reports_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, format!("{}\n", Key::generate().unwrap())).unwrap();
        let vars = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        assert!(matches!(Keys::from_lookup(|_| None), Keys::None));
        let k = Keys::from_lookup(vars(vec![("CHIMERA_KEY_FILE", file.display().to_string())]));
        assert!(k.usable().is_some());
        for bad in [
            vec![("CHIMERA_KEY", "short".to_string())],
            vec![("CHIMERA_KEY", B64.encode([1u8; 16]))],
            vec![("CHIMERA_KEY_FILE", "/nonexistent/key".to_string())],
            vec![("CHIMERA_PASSPHRASE", " ".to_string())],
            vec![
                ("CHIMERA_KEY", Key::generate().unwrap()),
                ("CHIMERA_PASSPHRASE", "x".to_string()),
            ],
            vec![("CHIMERA_FALLBACK_KEY", Key::generate().unwrap())],
        ] {
            let keys = Keys::from_lookup(vars(bad.clone()));
            let d = keys.get().expect_err("invalid");
            assert_eq!(d.code, codes::KEY_INVALID, "{bad:?}");
        }
        // No key: sealed data says so, with the key id.
        let ring = Keyring::new(key(), None);
        let sealed = ring.seal(purpose::PLAN_FILE, b"x").unwrap();
        let err = Keys::None
            .open(purpose::PLAN_FILE, sealed.as_bytes())
            .err()
            .unwrap();
        assert_eq!(
            err,
            SealError::NoKey {
                kid: ring.key_id().to_string()
            }
        );
        assert_eq!(err.diagnostic("p").code, codes::KEY_MISSING);
    }
}
