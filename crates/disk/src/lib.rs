//! Disk images behind one trait: raw files and qcow2 (through imago), with backing chains.
//!
//! The virtio-blk device model sees only [`DiskFile`]; [`open_disk`] is the one
//! constructor that detects or checks the format and opens the backing chain.

#![forbid(unsafe_code)]

use std::path::Path;

/// The image formats `open_disk` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("TODO")]
    Todo,
}

/// A virtual disk as the guest sees it: a byte-addressed array of `size()` bytes.
/// Positioned I/O only, so one open image can serve several requests at once.
pub trait DiskFile: Send + Sync {
    /// Virtual size in bytes (what the guest sees), not the file's size.
    fn size(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Fills `buf` from `offset`; reads past the end of the disk are an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError>;
    /// Writes `buf` at `offset`; an error on a read-only disk or past the end.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError>;
    /// Makes every completed write durable (fdatasync of the image and its metadata).
    fn flush(&self) -> Result<(), DiskError>;
    /// The guest no longer needs `len` bytes at `offset`; they may read back as anything
    /// until written again (we make them read as zeroes where the format allows).
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError>;
    /// `len` bytes at `offset` read back as zeroes afterwards.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError>;
}

/// Opens the image at `path`. With `format: None` the format is probed (a qcow2 magic,
/// else raw). A qcow2 image's backing chain is opened read-only.
pub fn open_disk(
    path: &Path,
    format: Option<Format>,
    read_only: bool,
) -> Result<Box<dyn DiskFile>, DiskError> {
    let _ = (path, format, read_only);
    Err(DiskError::Todo)
}
