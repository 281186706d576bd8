//! Key files: the repository master key wrapped by age, once per passphrase
//! or X25519 identity, so many people and machines can share one repository
//! without sharing one secret, and any one of them can be revoked.
//!
//! A key file is a small JSON object (kind, creation time, host, label) with
//! the age ciphertext of the master key inside. Passphrase keys use age's
//! scrypt recipient: deliberately slow (a work factor of 2^16, about a
//! hundred milliseconds here) to resist guessing. Identity keys use X25519
//! and unwrap in microseconds: the path for automation that opens the
//! repository once per file, such as PostgreSQL's archive_command.

use crate::error::{Error, Result};
use crate::format::crypto::{Keys, MasterKey};
use crate::format::time::Timestamp;
use crate::layout::ObjectKind;
use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// scrypt work factor (log2 N) for new passphrase keys.
pub const SCRYPT_LOG_N: u8 = 16;
/// Largest work factor accepted when unwrapping (bounds a hostile key file).
const SCRYPT_MAX_LOG_N: u8 = 22;

/// A secret that opens a key file.
pub enum Secret {
    Passphrase(SecretString),
    Identities(Vec<age::x25519::Identity>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Passphrase(_) => f.write_str("Secret::Passphrase(<redacted>)"),
            Secret::Identities(i) => write!(f, "Secret::Identities({} identities)", i.len()),
        }
    }
}

impl Secret {
    pub fn passphrase(p: String) -> Self {
        Secret::Passphrase(SecretString::from(p))
    }

    /// Reads an age identity file (lines `AGE-SECRET-KEY-1…`, `#` comments).
    /// Errors never echo the file's content.
    pub fn from_identity_file(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::usage_hint(
                format!("cannot read the identity file {}: {e}", path.display()),
                "--identity-file or BK_IDENTITY_FILE names it (an age key, from `age-keygen` or `bk-repo key add --generate-identity FILE`)",
            )
        })?);
        let mut ids = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id: age::x25519::Identity = line.parse().map_err(|_| {
                Error::Usage(format!(
                    "{} line {}: not an age X25519 identity (expected AGE-SECRET-KEY-1…)",
                    path.display(),
                    n + 1
                ))
            })?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Err(Error::Usage(format!(
                "{}: no age identity in file",
                path.display()
            )));
        }
        Ok(Secret::Identities(ids))
    }

    fn kind(&self) -> KeyKind {
        match self {
            Secret::Passphrase(_) => KeyKind::Passphrase,
            Secret::Identities(_) => KeyKind::Age,
        }
    }
}

pub use crate::format::wire::KeyKind;
use crate::format::wire::KeyRecord;

/// What a new key file is locked with.
pub enum NewKey {
    Passphrase(SecretString),
    Recipient(age::x25519::Recipient),
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewKey::Passphrase(_) => f.write_str("NewKey::Passphrase(<redacted>)"),
            NewKey::Recipient(r) => write!(f, "NewKey::Recipient({r})"),
        }
    }
}

impl From<&Secret> for NewKey {
    fn from(s: &Secret) -> Self {
        match s {
            Secret::Passphrase(p) => NewKey::Passphrase(p.clone()),
            Secret::Identities(ids) => NewKey::Recipient(ids[0].to_public()),
        }
    }
}

/// The stored form of a key (`keys/<id>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub v: u32,
    pub kind: KeyKind,
    pub created: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The public half of an identity key, so admins can tell keys apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// age ciphertext (binary, base64) of [`KeyPayload`].
    pub age: String,
    /// HMAC-SHA256 (hex, the repository's `mac` sub-key) over the key
    /// file's name and its other fields ([`key_mac_input`]), so `bk-verify`
    /// can authenticate every key file, not only the one it opened with.
    /// Key files written before this field existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What a secret makes of one key file.
#[derive(Debug)]
pub enum Unwrapped {
    /// The secret does not open this key file.
    NotThisSecret,
    Master(MasterKey),
    /// The key file opens but wraps the master key of the repository with
    /// this id, not of the one being opened.
    OtherRepository(String),
}

/// Domain tag of key file MACs (the `mac` sub-key also authenticates the config).
const KEY_MAC_DOMAIN: &[u8] = b"bk key file v1\0";

/// The bytes a key file's MAC covers: a domain tag, the key file's name (so
/// a key file cannot be renamed or swapped with another unnoticed), and
/// every JSON field except `mac`, fields unknown to this version included,
/// in canonical form (object keys sorted, compact).
pub fn key_mac_input(name: &str, value: &serde_json::Value) -> Vec<u8> {
    fn canonical(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), canonical(&m[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.iter().map(canonical).collect())
            }
            other => other.clone(),
        }
    }
    let mut body = match canonical(value) {
        serde_json::Value::Object(m) => m,
        other => {
            let mut m = serde_json::Map::new();
            m.insert(String::new(), other);
            m
        }
    };
    body.remove("mac");
    let mut out = KEY_MAC_DOMAIN.to_vec();
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    serde_json::to_writer(&mut out, &body).expect("serializable");
    out
}

/// Result of authenticating a stored key file with [`authenticate_key_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAuth {
    /// The MAC matches: written by a holder of this repository's master key
    /// under this very name.
    Authentic,
    /// No MAC (written before key files carried one): cannot be checked.
    Unsigned,
}

/// Checks a stored key file (its raw bytes) against its MAC. The error is a
/// message saying what is wrong.
pub fn authenticate_key_file(
    keys: &Keys,
    name: &str,
    raw: &[u8],
) -> std::result::Result<KeyAuth, String> {
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| format!("not a key file: {e}"))?;
    serde_json::from_value::<KeyFile>(value.clone()).map_err(|e| format!("not a key file: {e}"))?;
    match value.get("mac") {
        None | Some(serde_json::Value::Null) => Ok(KeyAuth::Unsigned),
        Some(serde_json::Value::String(m)) => {
            let tag = hex::decode(m).map_err(|_| "its mac is not hex".to_string())?;
            if keys.verify_mac(&key_mac_input(name, &value), &tag) {
                Ok(KeyAuth::Authentic)
            } else {
                Err(
                    "authentication failed: the key file was modified, or its content \
                     belongs to another key file's name"
                        .into(),
                )
            }
        }
        Some(_) => Err("its mac is not a string".into()),
    }
}

#[derive(Serialize, Deserialize)]
struct KeyPayload {
    master: String,
    repository: String,
}

impl KeyFile {
    /// The key file as `bk-repo key list` prints it (never its secret part).
    pub fn record(&self, name: &str, current: bool) -> KeyRecord {
        KeyRecord {
            id: name.to_string(),
            kind: Some(self.kind),
            created: Some(self.created),
            host: self.host.clone(),
            user: self.user.clone(),
            label: self.label.clone(),
            recipient: self.recipient.clone(),
            current: Some(current),
            v: crate::format::wire::VERSION,
            ..KeyRecord::default()
        }
    }

    pub fn seal(
        master: &MasterKey,
        repository_id: &str,
        new: &NewKey,
        label: Option<String>,
    ) -> Result<Self> {
        let payload = Zeroizing::new(
            serde_json::to_vec(&KeyPayload {
                master: B64.encode(master.as_bytes()),
                repository: repository_id.to_string(),
            })
            .expect("serializable"),
        );
        let (kind, recipient_text, encryptor) = match new {
            NewKey::Passphrase(p) => {
                let mut r = age::scrypt::Recipient::new(p.clone());
                r.set_work_factor(SCRYPT_LOG_N);
                let e = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient));
                (KeyKind::Passphrase, None, e)
            }
            NewKey::Recipient(r) => (
                KeyKind::Age,
                Some(r.to_string()),
                age::Encryptor::with_recipients(std::iter::once(r as &dyn age::Recipient)),
            ),
        };
        let encryptor =
            encryptor.map_err(|e| Error::internal("sealing a key file", format!("age: {e}")))?;
        let mut out = Vec::new();
        let mut w = encryptor
            .wrap_output(&mut out)
            .map_err(|e| Error::internal("sealing a key file", format!("age: {e}")))?;
        w.write_all(&payload)
            .and_then(|_| w.finish().map(|_| ()))
            .map_err(|e| Error::internal("sealing a key file", format!("age: {e}")))?;
        Ok(KeyFile {
            v: 1,
            kind,
            created: Timestamp::now(),
            host: crate::sys::hostname(),
            user: crate::sys::username(),
            label,
            recipient: recipient_text,
            age: B64.encode(out),
            mac: None,
        })
    }

    /// Sets [`KeyFile::mac`] for a key file stored as `keys/<name>`.
    pub fn sign(&mut self, keys: &Keys, name: &str) {
        self.mac = None;
        let value = serde_json::to_value(&*self).expect("serializable");
        self.mac = Some(hex::encode(keys.mac(&key_mac_input(name, &value))));
    }

    /// Whether `secret` could possibly open this key (avoids running scrypt
    /// for identity keys and vice versa).
    pub fn matches_kind(&self, secret: &Secret) -> bool {
        self.kind == secret.kind()
    }

    /// Unwraps the master key. `Ok(None)` means "not this secret"; a key
    /// of another repository is an error.
    pub fn open(
        &self,
        secret: &Secret,
        name: &str,
        repository_id: &str,
    ) -> Result<Option<MasterKey>> {
        match self.unwrap(secret, name, repository_id)? {
            Unwrapped::NotThisSecret => Ok(None),
            Unwrapped::Master(m) => Ok(Some(m)),
            Unwrapped::OtherRepository(other) => Err(Error::damaged(
                ObjectKind::Key,
                name.to_string(),
                format!("key belongs to repository {other}, not {repository_id}"),
            )),
        }
    }

    /// Unwraps the master key, telling "not this secret" and "a key of
    /// another repository" apart from damage (the error).
    pub fn unwrap(&self, secret: &Secret, name: &str, repository_id: &str) -> Result<Unwrapped> {
        if !self.matches_kind(secret) {
            return Ok(Unwrapped::NotThisSecret);
        }
        let bad = |m: String| Error::damaged(ObjectKind::Key, name.to_string(), m);
        let ct = B64
            .decode(&self.age)
            .map_err(|e| bad(format!("not base64: {e}")))?;
        let dec = age::Decryptor::new_buffered(&ct[..])
            .map_err(|e| bad(format!("not an age file: {e}")))?;
        let reader = match secret {
            Secret::Passphrase(p) => {
                let mut id = age::scrypt::Identity::new(p.clone());
                id.set_max_work_factor(SCRYPT_MAX_LOG_N);
                dec.decrypt(std::iter::once(&id as &dyn age::Identity))
            }
            Secret::Identities(ids) => dec.decrypt(ids.iter().map(|i| i as &dyn age::Identity)),
        };
        let mut reader = match reader {
            Ok(r) => r,
            Err(age::DecryptError::NoMatchingKeys) | Err(age::DecryptError::DecryptionFailed) => {
                return Ok(Unwrapped::NotThisSecret)
            }
            Err(age::DecryptError::ExcessiveWork { required, .. }) => {
                return Err(bad(format!(
                    "scrypt work factor {required} is above the accepted maximum"
                )))
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut plain = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut plain)
            .map_err(|e| bad(e.to_string()))?;
        let payload: KeyPayload = serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))?;
        if payload.repository != repository_id {
            return Ok(Unwrapped::OtherRepository(payload.repository));
        }
        let raw = Zeroizing::new(
            B64.decode(&payload.master)
                .map_err(|e| bad(e.to_string()))?,
        );
        let bytes: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| bad("master key has the wrong length".into()))?;
        Ok(Unwrapped::Master(MasterKey::from_bytes(bytes)))
    }
}

/// Secret text (an identity file's content); zeroized on drop.
pub type SecretText = SecretString;

pub fn expose(s: &SecretText) -> &str {
    s.expose_secret()
}

/// Generates a new age identity, returned as the text of an identity file.
pub fn generate_identity() -> (SecretString, String) {
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let text = format!(
        "# created by bk-repo: {}\n# public key: {}\n{}\n",
        Timestamp::now(),
        public,
        id.to_string().expose_secret()
    );
    (SecretString::from(text), public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_and_identity_keys_open_only_with_their_secret() {
        let master = MasterKey::generate();
        let pass = Secret::passphrase("correct horse".into());
        let kf = KeyFile::seal(&master, "repo1", &NewKey::from(&pass), None).unwrap();
        let got = kf.open(&pass, "k", "repo1").unwrap().unwrap();
        assert_eq!(got.as_bytes(), master.as_bytes());
        assert!(kf
            .open(&Secret::passphrase("wrong".into()), "k", "repo1")
            .unwrap()
            .is_none());
        assert!(kf.open(&pass, "k", "other-repo").is_err());

        let id = age::x25519::Identity::generate();
        let kf2 =
            KeyFile::seal(&master, "repo1", &NewKey::Recipient(id.to_public()), None).unwrap();
        let secret = Secret::Identities(vec![id]);
        assert_eq!(
            kf2.open(&secret, "k", "repo1").unwrap().unwrap().as_bytes(),
            master.as_bytes()
        );
        assert!(kf2
            .open(
                &Secret::Identities(vec![age::x25519::Identity::generate()]),
                "k",
                "repo1"
            )
            .unwrap()
            .is_none());
        // An identity never runs scrypt against a passphrase key.
        assert!(!kf.matches_kind(&secret));
    }

    #[test]
    fn identity_file_parsing_does_not_leak_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.txt");
        std::fs::write(
            &p,
            "# comment\nAGE-SECRET-KEY-NOTREALLYVALIDSECRETMATERIAL\n",
        )
        .unwrap();
        let err = Secret::from_identity_file(&p).unwrap_err().to_string();
        assert!(!err.contains("NOTREALLY"), "{err}");
        let (text, _) = generate_identity();
        std::fs::write(&p, text.expose_secret()).unwrap();
        assert!(
            matches!(Secret::from_identity_file(&p).unwrap(), Secret::Identities(v) if v.len() == 1)
        );
    }
}
