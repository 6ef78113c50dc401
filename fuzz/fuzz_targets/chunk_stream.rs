//! Fuzzes the chunker: blocks concatenate back to the input and respect the size bounds.

#![no_main]

use cairn_store::ChunkConfig;
use cairn_store::chunk::cut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = ChunkConfig::new(64, 256, 1024).expect("valid configuration");
    let ranges: Vec<_> = cut(data, &cfg).collect();
    let mut pos = 0;
    for (idx, range) in ranges.iter().enumerate() {
        assert_eq!(range.start, pos);
        assert!(range.end - range.start <= 1024);
        if idx + 1 < ranges.len() {
            assert!(range.end - range.start >= 64);
        }
        pos = range.end;
    }
    assert_eq!(pos, data.len());
});
