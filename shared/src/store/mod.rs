//! Where repository objects live and how they are read and written so that
//! concurrent writers, prunes and readers stay consistent: the backends and
//! their durability contract, the repository (config, keys, index and
//! snapshot objects), locks, garbage-collection marks, and the readers of
//! chunks and listings.

pub mod backend;
pub mod keys;
pub mod listing;
pub mod locks;
pub mod marks;
pub mod packer;
pub mod reader;
pub mod repo;
