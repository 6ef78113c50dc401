//! Reading a known number of bytes at an offset into a new buffer that is never zero-filled.
//!
//! `vec![0; len]` then `read_exact_at` writes every byte twice, and for block-sized buffers it
//! costs more than the copy: an allocator that recycles memory (jemalloc) zeroes a reused
//! extent by giving its pages back (`madvise`), so each block read also takes a page fault per
//! page. Reading straight into the spare capacity of an empty `Vec` skips both.

use std::fs::File;
use std::io::ErrorKind;

/// Reads exactly `len` bytes of `file` at `offset` into a new buffer.
///
/// # Errors
/// IO errors; `UnexpectedEof` if the file ends first.
pub fn read_exact_at(file: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn reads_the_bytes_asked_for_and_refuses_past_the_end() {
        let mut file = tempfile::tempfile().expect("temp");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).expect("write");
        assert_eq!(
            read_exact_at(&file, 1000, 500).expect("read"),
            &data[500..1500]
        );
        assert_eq!(read_exact_at(&file, 0, 7).expect("read"), Vec::<u8>::new());
        assert_eq!(read_exact_at(&file, 100_000, 0).expect("read"), data);
        let err = read_exact_at(&file, 10, 99_995).expect_err("past the end");
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    }
}
