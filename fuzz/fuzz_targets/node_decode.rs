//! Fuzzes the tree-node decoder: it must never panic, and whatever it accepts must re-encode to
//! exactly the same bytes (the encoding is canonical).

#![no_main]

use cairn_store::node::Node;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = Node::decode(data) {
        assert_eq!(node.to_bytes(), data, "decode accepted a non-canonical encoding");
    }
});
