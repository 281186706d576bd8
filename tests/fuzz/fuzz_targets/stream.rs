//! The JSON-lines stream reader bk-put and bk-get read stdin with: any
//! bytes give records or a clean error, never a panic; entry paths pass or
//! fail the relative-path check.
#![no_main]
use bk::wire::{check_relative_path, Record, RecordReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = RecordReader::new(data);
    while let Ok(Some(rec)) = reader.next_record() {
        if let Record::Entry(e) = &rec {
            if let Ok(p) = e.path_bytes() {
                let _ = check_relative_path(&p);
            }
            let _ = e.target_bytes();
        }
    }
    let _ = check_relative_path(data);
});
