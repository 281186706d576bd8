//! The index object decoder (after authentication) and the pack entry
//! table it shares with pack headers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(file) = bk::index::IndexFile::decode(data) {
        // What decodes re-encodes to what was read.
        let again = bk::index::IndexFile::decode(&file.encode()).expect("re-decodes");
        assert_eq!(again.encode(), file.encode());
    }
    if let Some((&n, rest)) = data.split_first() {
        let _ = bk::pack::decode_entries(rest, n as usize);
    }
});
