//! Content addresses: [`BlockId`] for stored blocks, [`NodeId`] for tree nodes.
//!
//! Both are BLAKE3-256 digests. They are distinct types so a node id cannot be passed where a
//! data block is meant, even though nodes are kept in the same [`crate::BlockStore`].

use std::fmt;
use std::str::FromStr;

/// Why a hex string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {input:?}; an id is 64 lowercase hex digits")]
pub struct IdParseError {
    input: String,
}

macro_rules! digest_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = 32;

            /// The BLAKE3-256 digest of `bytes`.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            /// Wraps a digest that was computed elsewhere (read from a node or the wire).
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 8 hex digits, for logs.
            pub fn short(&self) -> String {
                self.to_string()[..8].to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(serializer)
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                <[u8; 32]>::deserialize(deserializer).map(Self)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(input: &str) -> Result<Self, IdParseError> {
                // blake3 also accepts uppercase; ids are canonical lowercase so that the same
                // id has one spelling in paths, URLs and logs.
                let canonical = input.len() == 64
                    && input.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                match blake3::Hash::from_hex(input) {
                    Ok(hash) if canonical => Ok(Self(*hash.as_bytes())),
                    _ => Err(IdParseError { input: input.chars().take(80).collect() }),
                }
            }
        }
    };
}

digest_id!(
    /// The address of a stored block: BLAKE3-256 of its (uncompressed) bytes.
    ///
    /// In an encrypted folder the bytes are the ciphertext, so the same type addresses both.
    BlockId
);

digest_id!(
    /// The address of a tree node: BLAKE3-256 of its canonical encoding ([`crate::node::Node::encode`]).
    NodeId
);

impl From<NodeId> for BlockId {
    /// A node is stored as a block of its encoding, so its id is that block's id.
    fn from(id: NodeId) -> Self {
        BlockId(id.0)
    }
}

impl From<BlockId> for NodeId {
    /// Reads a block id as a node id; [`crate::NodeStore::get_node`] then checks it decodes.
    fn from(id: BlockId) -> Self {
        NodeId(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_known_digest() {
        // BLAKE3 of the empty input, from the BLAKE3 reference test vectors.
        let empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        let id = BlockId::of(b"");
        assert_eq!(id.to_string(), empty);
        assert_eq!(empty.parse::<BlockId>(), Ok(id));
        assert_eq!(id.short(), "af1349b9");
        assert_eq!(format!("{id:?}"), "BlockId(af1349b9)");
    }

    #[test]
    fn parse_rejects_non_canonical() {
        let upper = "AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262";
        for bad in ["", "af13", upper, &"g".repeat(64), &"a".repeat(65)] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad} parsed");
        }
    }
}
