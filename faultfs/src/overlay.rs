//! The unsynced data of one file: byte ranges written since the last fsync, kept in memory
//! on top of the backing file until an fsync writes them through (or a power loss drops them).
//!
//! Pure data structure, no I/O: the file system reads the backing bytes and lets
//! [`Overlay::patch`] lay the unsynced ranges over them.

use std::collections::BTreeMap;

/// Unsynced writes of one file and the file's logical length.
///
/// Invariants: extents never overlap, never touch (adjacent ones are merged), are never empty,
/// and all end at or before `len`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    len: u64,
    extents: BTreeMap<u64, Vec<u8>>,
}

impl Overlay {
    /// An overlay with nothing unsynced over a backing file of `backing_len` bytes.
    pub fn new(backing_len: u64) -> Self {
        Self {
            len: backing_len,
            extents: BTreeMap::new(),
        }
    }

    /// The logical length of the file (what `stat` reports).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// How many unsynced bytes the overlay holds.
    pub fn dirty_bytes(&self) -> u64 {
        self.extents.values().map(|v| v.len() as u64).sum()
    }

    /// The unsynced ranges, in offset order.
    pub fn extents(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.extents.iter().map(|(o, d)| (*o, d.as_slice()))
    }

    /// Records a write of `data` at `offset`; the file grows if it ends past the end.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // Everything that overlaps or touches [offset, end) is merged into one new extent.
        let touching: Vec<u64> = self
            .extents
            .range(..=end)
            .filter(|(o, d)| *o + d.len() as u64 >= offset)
            .map(|(o, _)| *o)
            .collect();
        let mut start = offset;
        let mut stop = end;
        for o in &touching {
            let d = &self.extents[o];
            start = start.min(*o);
            stop = stop.max(*o + d.len() as u64);
        }
        let mut merged = vec![0u8; (stop - start) as usize];
        for o in touching {
            if let Some(d) = self.extents.remove(&o) {
                let at = (o - start) as usize;
                merged[at..at + d.len()].copy_from_slice(&d);
            }
        }
        let at = (offset - start) as usize;
        merged[at..at + data.len()].copy_from_slice(data);
        self.extents.insert(start, merged);
        self.len = self.len.max(end);
    }

    /// Sets the logical length: unsynced bytes past `len` are discarded.
    pub fn truncate(&mut self, len: u64) {
        let cut: Vec<u64> = self
            .extents
            .range(..)
            .filter(|(o, d)| *o + d.len() as u64 > len)
            .map(|(o, _)| *o)
            .collect();
        for o in cut {
            if o >= len {
                self.extents.remove(&o);
            } else if let Some(d) = self.extents.get_mut(&o) {
                d.truncate((len - o) as usize);
            }
        }
        self.len = len;
    }

    /// Overwrites `buf` (the file's bytes at `offset` as the backing file holds them, zeros
    /// where it holds none) with the unsynced bytes that fall inside it.
    pub fn patch(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (o, d) in self.extents.range(..end) {
            let d_end = *o + d.len() as u64;
            if d_end <= offset {
                continue;
            }
            let from = offset.max(*o);
            let to = end.min(d_end);
            let src = &d[(from - o) as usize..(to - o) as usize];
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file's content as the overlay over `backing` presents it.
    fn view(ov: &Overlay, backing: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; ov.len() as usize];
        let n = backing.len().min(buf.len());
        buf[..n].copy_from_slice(&backing[..n]);
        ov.patch(0, &mut buf);
        buf
    }

    fn check_invariants(ov: &Overlay) {
        let mut prev_end: Option<u64> = None;
        for (o, d) in ov.extents() {
            assert!(!d.is_empty());
            if let Some(p) = prev_end {
                assert!(o > p, "extents overlap or touch: {ov:?}");
            }
            prev_end = Some(o + d.len() as u64);
            assert!(o + d.len() as u64 <= ov.len());
        }
    }

    #[test]
    fn writes_lay_over_the_backing_bytes() {
        let backing = b"aaaaaaaaaa".to_vec();
        let mut ov = Overlay::new(10);
        ov.write(2, b"XY");
        assert_eq!(view(&ov, &backing), b"aaXYaaaaaa");
        ov.write(12, b"Z");
        assert_eq!(ov.len(), 13);
        assert_eq!(view(&ov, &backing), b"aaXYaaaaaa\0\0Z");
        assert_eq!(ov.dirty_bytes(), 3);
        check_invariants(&ov);
    }

    #[test]
    fn overlapping_and_adjacent_writes_merge_with_the_latest_bytes_winning() {
        let mut ov = Overlay::new(0);
        ov.write(0, b"aaaa");
        ov.write(8, b"cccc");
        ov.write(4, b"bbbb"); // touches both neighbours
        assert_eq!(ov.extents().count(), 1);
        ov.write(2, b"XXXXXXXX");
        assert_eq!(view(&ov, b""), b"aaXXXXXXXXcc");
        check_invariants(&ov);
    }

    #[test]
    fn truncate_cuts_unsynced_bytes_and_a_regrown_file_reads_zeros() {
        let mut ov = Overlay::new(0);
        ov.write(0, b"0123456789");
        ov.write(20, b"tail");
        ov.truncate(5);
        assert_eq!(view(&ov, b""), b"01234");
        ov.truncate(8);
        assert_eq!(view(&ov, b""), b"01234\0\0\0");
        check_invariants(&ov);
    }

    #[test]
    fn patch_of_a_window_copies_only_what_falls_inside() {
        let mut ov = Overlay::new(16);
        ov.write(3, b"abc");
        ov.write(10, b"xyz");
        let mut buf = vec![b'.'; 6];
        ov.patch(4, &mut buf);
        assert_eq!(&buf, b"bc....");
        let mut buf = vec![b'.'; 4];
        ov.patch(9, &mut buf);
        assert_eq!(&buf, b".xyz");
    }

    #[test]
    fn random_operations_match_a_plain_byte_vector() {
        // A tiny deterministic generator keeps this test free of extra dependencies.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut backing: Vec<u8> = (0..next(40)).map(|i| b'A' + (i % 26) as u8).collect();
            let mut model = backing.clone();
            let mut ov = Overlay::new(backing.len() as u64);
            for step in 0..30 {
                if next(5) == 0 {
                    // Truncation goes through to the backing file as well.
                    let len = next(60) as usize;
                    model.resize(len, 0);
                    backing.resize(len, 0);
                    ov.truncate(len as u64);
                } else {
                    let off = next(50) as usize;
                    let data: Vec<u8> = (0..next(12)).map(|i| (step * 7 + i) as u8).collect();
                    if !data.is_empty() {
                        if model.len() < off + data.len() {
                            model.resize(off + data.len(), 0);
                        }
                        model[off..off + data.len()].copy_from_slice(&data);
                    }
                    ov.write(off as u64, &data);
                }
                check_invariants(&ov);
                assert_eq!(view(&ov, &backing), model);
            }
        }
    }
}
