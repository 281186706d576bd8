//! The integration tests: the real bk binaries driven through real pipes
//! and processes, against a local repository or (BK_TEST_BACKEND=s3) the
//! S3 test server that scripts/test starts. One test binary, so the S3
//! SDK and the library are linked once; one module per area.

mod common;

mod cli;
mod containers;
mod expectations;
mod incremental;
mod install;
mod prune;
mod recipes;
mod repo;
mod roundtrip;
mod s3;
mod safety;
mod sqlite;
mod torture;
mod verify;
mod wal;
