//! Backup and restore of a whole store to object storage (an S3-compatible bucket or a
//! directory). See `docs/backup.md` for what a backup guarantees.
//!
//! - [`destination`]: `s3://bucket/prefix` / `file:///path`, opened as an object store.
//! - [`format`]: the versioned format of one partition's object (pure).
//! - [`manifest`]: the manifest written last, and object checksums (pure).
//! - [`plan`]: which replica exports a partition (pure).
//! - [`export`]: node side — stream a consistent partition snapshot into the destination.
//! - [`peers`]: client of the nodes' backup endpoints.
//! - [`run`]: orchestration of a backup over all partitions.
//! - [`restore`]: verify a backup and write it into a store (any partition count).
//! - [`retention`]: deleting old backups.

pub mod destination;
pub mod export;
pub mod format;
pub mod manifest;
pub mod peers;
pub mod plan;
pub mod restore;
pub mod retention;
pub mod run;

pub use destination::{Destination, S3Args, S3Options};
pub use manifest::Manifest;
pub use run::{BackupError, BackupEvent, BackupSettings, run_backup};
