//! A pack's trailer and header as bk-verify and index rebuilds read them:
//! lengths out of range, bad magic or a header that does not authenticate
//! are errors, never a panic or an allocation the input chose.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = bk::crypto::MasterKey::from_bytes([7; 32]).derive();
    let _ = bk::pack::read_header(&keys, "fuzz", data);
});
