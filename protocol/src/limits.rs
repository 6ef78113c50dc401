//! Bounds of the protocol, with their reasoning.

/// Longest path, in bytes: 4,096, Linux's `PATH_MAX`.
pub const PATH_BYTES_MAX: usize = 4096;

/// Longest single path component, in bytes: 255, what ext4, XFS, APFS and NTFS allow.
pub const PATH_COMPONENT_BYTES_MAX: usize = 255;

/// Deepest path, in components: 256, the store's `TREE_DEPTH_MAX`.
pub const PATH_DEPTH_MAX: usize = 256;

const _: () = assert!(PATH_DEPTH_MAX as u32 == cairn_store::limits::TREE_DEPTH_MAX);
const _: () = assert!(PATH_COMPONENT_BYTES_MAX <= cairn_store::limits::NAME_BYTES_MAX as usize);
