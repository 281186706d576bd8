//! Bytes at rest and on the wire. Nothing here does I/O: each module turns
//! values into bytes and back, and checks what it reads.

pub mod chunker;
pub mod crypto;
pub mod duration;
pub mod human;
pub mod id;
pub mod index;
pub mod pack;
pub mod sqlite;
pub mod time;
pub mod wal;
pub mod wire;
