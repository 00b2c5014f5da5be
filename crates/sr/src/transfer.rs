//! Copying what one disk shows into another, skipping what need not be written: the engine
//! of `VDI.copy` (everything, flattened) and of coalescing (the top two layers, over the rest
//! of the chain).

use fv_disk::{DiskError, DiskFile, Extent};

/// Bytes read at a time.
const CHUNK: u64 = 1 << 20;
/// Zero detection granularity: a qcow2 cluster (the default 64 KiB).
const BLOCK: usize = 64 << 10;

/// Makes `dst` (same size, freshly created, on the chain below `layers` top layers of `src`,
/// whose first `below` bytes it shows) read as `src` reads. Data extents are written except
/// where zero and nothing below shows through; zero extents of the top layers are written as
/// zeroes only over the first `below` bytes. Returns `false` if `progress` cancelled.
pub(crate) fn transfer(
    src: &dyn DiskFile,
    dst: &dyn DiskFile,
    layers: usize,
    below: u64,
    progress: &mut dyn FnMut(f64) -> bool,
) -> Result<bool, DiskError> {
    let size = src.size();
    let fraction = |at: u64| {
        if size == 0 {
            1.0
        } else {
            at as f64 / size as f64
        }
    };
    let mut buf = vec![0u8; CHUNK as usize];
    let mut at = 0;
    while at < size {
        let (kind, n) = src.extent(at, size - at, layers)?;
        if n == 0 {
            break;
        }
        match kind {
            Extent::Below => {}
            Extent::Zero => {
                if at < below {
                    dst.write_zeroes(at, n.min(below - at))?;
                }
            }
            Extent::Data => {
                let mut done = 0;
                while done < n {
                    let len = (n - done).min(CHUNK);
                    let piece = &mut buf[..len as usize];
                    src.read_at(piece, at + done)?;
                    write_nonzero(dst, piece, at + done, below)?;
                    done += len;
                    if !progress(fraction(at + done)) {
                        return Ok(false);
                    }
                }
            }
        }
        at += n;
        if !progress(fraction(at)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes `data` at `offset`, block by block, skipping zero blocks where nothing shows from
/// below (past `below`) and writing them as zeroes where something does.
fn write_nonzero(
    dst: &dyn DiskFile,
    data: &[u8],
    offset: u64,
    below: u64,
) -> Result<(), DiskError> {
    let mut start = 0;
    while start < data.len() {
        let end = (start + BLOCK).min(data.len());
        let block = &data[start..end];
        let at = offset + start as u64;
        if block.iter().any(|&b| b != 0) {
            // Merge the run of non-zero blocks into one write.
            let mut run_end = end;
            while run_end < data.len() {
                let next = (run_end + BLOCK).min(data.len());
                if data[run_end..next].iter().all(|&b| b == 0) {
                    break;
                }
                run_end = next;
            }
            dst.write_at(&data[start..run_end], at)?;
            start = run_end;
        } else {
            if at < below {
                dst.write_zeroes(at, block.len() as u64)?;
            }
            start = end;
        }
    }
    Ok(())
}
