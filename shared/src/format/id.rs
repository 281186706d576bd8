//! Newtypes for the two kinds of 256-bit identifiers bk uses.
//!
//! * [`ChunkId`]: SHA-256 of a chunk's plaintext. It only ever appears inside
//!   encrypted objects (listings, pack headers, index objects) and in the
//!   streams the user's own tools exchange, never in a storage object name.
//! * [`ObjectId`]: SHA-256 of a stored object's *ciphertext*. Object names are
//!   therefore unique per write (encryption uses fresh nonces), reveal nothing
//!   about content, and let anyone check an object's integrity without keys.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// SHA-256 of `data`.
            pub fn digest(data: &[u8]) -> Self {
                Self(Sha256::digest(data).into())
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, as human output shows an id (and
            /// every tool accepts a unique prefix back).
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some(Self(out))
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, "({})"), &self.to_hex()[..16])
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::from_hex(s).ok_or_else(|| format!("not a 64-digit hex {}: {s:?}", $what))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(ChunkId, "chunk id");
id_type!(ObjectId, "object id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_json() {
        let id = ChunkId::digest(b"hello");
        assert_eq!(
            id.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let json = serde_json::to_string(&id).unwrap();
        let back: ChunkId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!("zz".parse::<ChunkId>().is_err());
        assert!(serde_json::from_str::<ObjectId>("\"abc\"").is_err());
    }
}
