//! A resource's backing: the guest's memory entries, each checked and placed (guest RAM or a
//! passthrough region), read as one linear buffer in entry order.

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use crate::error::{GpuError, GpuResult};
use crate::exporter::PixelSource;
use crate::exporter::{BlobMemory, ExportKind, PixelReadError, RegionKey};
use crate::protocol::BlobEntry;

/// Where one entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Guest RAM.
    Ram,
    /// A passthrough device's region.
    Passthrough(RegionKey),
}

/// Checked entries with their placements and prefix offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backing {
    entries: Vec<(BlobEntry, Placement)>,
    /// `starts[i]` = byte offset of entry `i` in the linear buffer.
    starts: Vec<u64>,
    total: u64,
}

/// How a blob's backing can be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPath {
    /// One dma-buf of this kind can be made.
    Export(ExportKind),
    /// No dma-buf: pixels are read through guest memory / BAR mappings. The text says why.
    Cpu(String),
}

impl Backing {
    /// Checks every entry of a 2D resource: non-empty and wholly inside guest RAM.
    pub fn guest_ram<G: GuestMemory + ?Sized>(
        mem: &G,
        entries: &[BlobEntry],
    ) -> GpuResult<Backing> {
        Self::build(entries, |i, e| {
            if e.len > 0 && in_ram(mem, e) {
                Ok(Placement::Ram)
            } else {
                Err(bad_entry(i, e))
            }
        })
    }

    /// Checks every entry of a blob: non-empty and wholly inside one passthrough region known
    /// to `exporter` (looked up first) or wholly inside guest RAM.
    pub fn blob<G: GuestMemory + ?Sized>(
        mem: &G,
        exporter: &dyn BlobMemory,
        entries: &[BlobEntry],
    ) -> GpuResult<Backing> {
        Self::build(entries, |i, e| {
            if e.len == 0 {
                return Err(bad_entry(i, e));
            }
            // Passthrough regions first: a VMM may also list BAR mappings in its guest
            // memory map, and such entries must still go to VFIO, not udmabuf.
            if let Some(region) = exporter.locate(e.addr, e.len) {
                return Ok(Placement::Passthrough(region));
            }
            if in_ram(mem, e) {
                return Ok(Placement::Ram);
            }
            Err(bad_entry(i, e))
        })
    }

    fn build(
        entries: &[BlobEntry],
        mut place: impl FnMut(usize, &BlobEntry) -> GpuResult<Placement>,
    ) -> GpuResult<Backing> {
        let mut placed = Vec::with_capacity(entries.len());
        let mut starts = Vec::with_capacity(entries.len());
        let mut total: u64 = 0;
        for (i, e) in entries.iter().enumerate() {
            if e.addr.checked_add(e.len).is_none() {
                return Err(bad_entry(i, e));
            }
            let p = place(i, e)?;
            starts.push(total);
            total = total.checked_add(e.len).ok_or_else(|| bad_entry(i, e))?;
            placed.push((*e, p));
        }
        Ok(Backing {
            entries: placed,
            starts,
            total,
        })
    }

    /// Host memory a backing of `entries` entries takes (counted against `max_hostmem`).
    pub fn host_bytes_for(entries: usize) -> u64 {
        let per_entry = std::mem::size_of::<(BlobEntry, Placement)>() + std::mem::size_of::<u64>();
        (entries as u64).saturating_mul(per_entry as u64)
    }

    /// Host memory this backing takes.
    pub fn host_bytes(&self) -> u64 {
        Self::host_bytes_for(self.entries.len())
    }

    /// Ranges of a dma-buf of the first `size` bytes: entries that continue the previous one in
    /// guest-physical memory merge, as the kernel interfaces merge them.
    pub fn ranges_up_to(&self, size: u64) -> usize {
        let mut ranges = 0;
        let mut left = size;
        let mut prev_end = None;
        for (e, _) in &self.entries {
            if left == 0 {
                break;
            }
            if prev_end != Some(e.addr) {
                ranges += 1;
            }
            let len = e.len.min(left);
            left -= len;
            prev_end = e.addr.checked_add(len);
        }
        ranges
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The entries in guest order.
    pub fn entries(&self) -> impl Iterator<Item = BlobEntry> + '_ {
        self.entries.iter().map(|(e, _)| *e)
    }

    /// How a blob with this backing can be shown: one export when every entry is in guest
    /// RAM or every entry is in the same passthrough region; otherwise the CPU path.
    pub fn blob_path(&self) -> BlobPath {
        let mut it = self.entries.iter().map(|(_, p)| *p);
        let Some(first) = it.next() else {
            return BlobPath::Cpu("blob has no entries".to_string());
        };
        for p in it {
            if p != first {
                let why = match (first, p) {
                    (Placement::Ram, _) | (_, Placement::Ram) => {
                        "entries span guest RAM and a passthrough BAR"
                    }
                    (Placement::Passthrough(a), Placement::Passthrough(b))
                        if a.device == b.device =>
                    {
                        "entries span two regions of a passthrough device"
                    }
                    _ => "entries span two passthrough devices",
                };
                return BlobPath::Cpu(why.to_string());
            }
        }
        BlobPath::Export(match first {
            Placement::Ram => ExportKind::Udmabuf,
            Placement::Passthrough(r) => ExportKind::Vfio(r),
        })
    }

    /// Copies `buf.len()` bytes at linear `offset` out of the backing.
    pub fn read_at<G: GuestMemory + ?Sized>(
        &self,
        mem: &G,
        exporter: &dyn BlobMemory,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), PixelReadError> {
        let len = buf.len();
        let err = |reason: String| PixelReadError {
            offset,
            len,
            reason,
        };
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.total)
            .ok_or_else(|| err(format!("past the end of {} bytes", self.total)))?;
        if buf.is_empty() {
            return Ok(());
        }
        // The entry holding `offset`: the last start <= offset.
        let mut idx = self
            .starts
            .partition_point(|s| *s <= offset)
            .saturating_sub(1);
        let mut pos = offset;
        let mut done = 0usize;
        while pos < end {
            let (entry, place) = self.entries[idx];
            let in_entry = pos - self.starts[idx];
            let avail = entry.len - in_entry;
            let n = avail.min(end - pos) as usize;
            let dst = &mut buf[done..done + n];
            let gpa = entry.addr + in_entry;
            match place {
                Placement::Ram => mem
                    .read_slice(dst, GuestAddress(gpa))
                    .map_err(|e| err(format!("guest memory at {gpa:#x}: {e}")))?,
                Placement::Passthrough(_) => exporter
                    .read(gpa, dst)
                    .map_err(|e| err(format!("passthrough memory at {gpa:#x}: {e}")))?,
            }
            done += n;
            pos += n as u64;
            idx += 1;
        }
        Ok(())
    }
}

/// Whether the entry lies wholly in readable guest RAM.
fn in_ram<G: GuestMemory + ?Sized>(mem: &G, e: &BlobEntry) -> bool {
    usize::try_from(e.len)
        .is_ok_and(|len| mem.check_range(GuestAddress(e.addr), len, Permissions::Read))
}

fn bad_entry(index: usize, e: &BlobEntry) -> GpuError {
    GpuError::BadEntry {
        index,
        addr: e.addr,
        len: e.len,
    }
}

/// A backing read through guest memory (and the exporter for BAR entries): the CPU path.
pub struct BackingPixels<'a, G: GuestMemory + ?Sized> {
    /// The backing.
    pub backing: &'a Backing,
    /// Guest RAM.
    pub mem: &'a G,
    /// For passthrough entries.
    pub exporter: &'a dyn BlobMemory,
}

impl<G: GuestMemory + ?Sized> PixelSource for BackingPixels<'_, G> {
    fn size(&self) -> u64 {
        self.backing.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), PixelReadError> {
        self.backing.read_at(self.mem, self.exporter, offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::BlobExporter;
    use crate::test_util::{FakeExporter, BAR_BASE};

    type GuestMem = vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn e(addr: u64, len: u32) -> BlobEntry {
        BlobEntry::new(addr, u64::from(len))
    }

    #[test]
    fn ram_entries_are_checked() {
        let m = mem();
        assert!(Backing::guest_ram(&m, &[e(0x1000, 0x1000)]).is_ok());
        for (bad, idx) in [
            (vec![e(0x1000, 0x1000), e(0xff000, 0x2000)], 1), // crosses the end
            (vec![e(0x20_0000, 16)], 0),                      // outside
            (vec![e(0x1000, 0)], 0),                          // empty
            (vec![e(u64::MAX - 4, 16)], 0),                   // overflows
        ] {
            match Backing::guest_ram(&m, &bad) {
                Err(GpuError::BadEntry { index, .. }) => assert_eq!(index, idx),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn reads_cross_entries_in_guest_order() {
        let m = mem();
        m.write_slice(&[1, 2, 3, 4], GuestAddress(0x2000)).unwrap();
        m.write_slice(&[5, 6, 7, 8], GuestAddress(0x1000)).unwrap();
        // Entry order: 0x2000 first, then 0x1000.
        let b = Backing::guest_ram(&m, &[e(0x2000, 4), e(0x1000, 4)]).unwrap();
        assert_eq!(b.len(), 8);
        let mut buf = [0u8; 6];
        b.read_at(&m, &BlobExporter::new(), 1, &mut buf).unwrap();
        assert_eq!(buf, [2, 3, 4, 5, 6, 7]);
        let mut past = [0u8; 2];
        assert!(b.read_at(&m, &BlobExporter::new(), 7, &mut past).is_err());
        assert!(b
            .read_at(&m, &BlobExporter::new(), u64::MAX, &mut past)
            .is_err());
    }

    #[test]
    fn blob_paths() {
        let m = mem();
        let x = FakeExporter::new();
        let ram = Backing::blob(&m, &x, &[e(0x1000, 0x1000), e(0x3000, 0x1000)]).unwrap();
        assert_eq!(ram.blob_path(), BlobPath::Export(ExportKind::Udmabuf));
        let bar =
            Backing::blob(&m, &x, &[e(BAR_BASE + 0x2000, 0x1000), e(BAR_BASE, 0x1000)]).unwrap();
        assert!(matches!(
            bar.blob_path(),
            BlobPath::Export(ExportKind::Vfio(_))
        ));
        let mixed = Backing::blob(&m, &x, &[e(0x1000, 0x1000), e(BAR_BASE, 0x1000)]).unwrap();
        assert!(matches!(mixed.blob_path(), BlobPath::Cpu(why) if why.contains("RAM")));
        let two = Backing::blob(
            &m,
            &x,
            &[e(BAR_BASE, 0x1000), e(crate::test_util::BAR2_BASE, 0x1000)],
        )
        .unwrap();
        assert!(matches!(two.blob_path(), BlobPath::Cpu(why) if why.contains("two regions")));
        assert!(matches!(
            Backing::blob(&m, &x, &[e(0x5000_0000, 0x1000)]),
            Err(GpuError::BadEntry { index: 0, .. })
        ));
    }

    #[test]
    fn passthrough_wins_when_the_bar_is_also_in_the_memory_map() {
        let m = GuestMem::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(BAR_BASE), 0x4000),
        ])
        .unwrap();
        let x = FakeExporter::new();
        let b =
            Backing::blob(&m, &x, &[e(BAR_BASE + 0x1000, 0x1000), e(BAR_BASE, 0x1000)]).unwrap();
        assert!(matches!(
            b.blob_path(),
            BlobPath::Export(ExportKind::Vfio(_))
        ));
    }
}
