//! A split virtqueue (virtio 1.x section 2.7) driven from user space, one batch at a time.
//!
//! Layout: the descriptor table, the available ring and the used ring each live in their own
//! locked page (so no physical contiguity is needed); their guest-physical addresses come from
//! pagemap. A batch is one or more requests, each a chain of descriptors; the chains fill the
//! descriptor table from descriptor 0 in order and go into the available ring with one index
//! update (so one notification serves them all). Completions are found by polling the used
//! ring's `idx` with a deadline.

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use crate::error::{Error, Result};
use crate::pagemap::{LockedPages, Pagemap, PAGE_SIZE};

/// Size of one descriptor.
pub const DESC_SIZE: usize = 16;

/// Encodes `struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }`.
pub fn encode_desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; DESC_SIZE] {
    let mut d = [0u8; DESC_SIZE];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

/// Byte offset of `ring[i]` in the available ring (`le16 flags; le16 idx; le16 ring[N]; ...`).
pub fn avail_ring_offset(i: u16) -> usize {
    4 + 2 * usize::from(i)
}

/// Byte offset of `ring[i]` in the used ring (`le16 flags; le16 idx; {le32 id; le32 len}[N]; ...`).
pub fn used_elem_offset(i: u16) -> usize {
    4 + 8 * usize::from(i)
}

/// Bytes of (descriptor table, available ring, used ring) for `size` entries, event fields included.
pub fn ring_bytes(size: u16) -> (usize, usize, usize) {
    let n = usize::from(size);
    (DESC_SIZE * n, 6 + 2 * n, 6 + 8 * n)
}

/// One buffer of a request: guest-physical address, length, device-writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (a response buffer).
    pub write: bool,
}

/// Descriptors for a chain of buffers, starting at descriptor 0 and linked in order.
pub fn chain_descs(bufs: &[Buf]) -> Vec<[u8; DESC_SIZE]> {
    chain_descs_from(bufs, 0)
}

/// Descriptors for a chain of buffers starting at descriptor `first`, linked in order
/// (`first + i` links to `first + i + 1`).
pub fn chain_descs_from(bufs: &[Buf], first: u16) -> Vec<[u8; DESC_SIZE]> {
    bufs.iter()
        .enumerate()
        .map(|(i, b)| {
            let last = i + 1 == bufs.len();
            let mut flags = if b.write {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            let next = if last {
                0
            } else {
                flags |= VRING_DESC_F_NEXT as u16;
                first.wrapping_add(i as u16 + 1)
            };
            encode_desc(b.addr, b.len, flags, next)
        })
        .collect()
}

/// The descriptor table of a batch in a queue of `size` entries: the chains one after the other
/// from descriptor 0. Returns the descriptors and each chain's head index (the `id` of its used
/// element). Errors if a chain is empty or the batch needs more than `size` descriptors.
pub fn batch_descs(chains: &[&[Buf]], size: u16) -> Result<(Vec<[u8; DESC_SIZE]>, Vec<u16>)> {
    let total: usize = chains.iter().map(|c| c.len()).sum();
    if chains.is_empty() || chains.iter().any(|c| c.is_empty()) || total > usize::from(size) {
        return Err(Error::Unsupported(format!(
            "a batch of {} chains with {total} buffers for a queue of {size}",
            chains.len()
        )));
    }
    let mut descs = Vec::with_capacity(total);
    let mut heads = Vec::with_capacity(chains.len());
    for c in chains {
        // total <= size <= u16::MAX, so every index fits.
        let head = descs.len() as u16;
        heads.push(head);
        descs.extend(chain_descs_from(c, head));
    }
    Ok((descs, heads))
}

/// A split virtqueue in locked pages.
#[derive(Debug)]
pub struct SplitQueue {
    size: u16,
    desc: LockedPages,
    avail: LockedPages,
    used: LockedPages,
    /// Guest-physical addresses of (descriptor table, available ring, used ring).
    pub phys: (u64, u64, u64),
    next_avail: u16,
    last_used: u16,
}

impl SplitQueue {
    /// Allocates a queue of `size` entries (each ring must fit in a page: size <= 256).
    pub fn new(pm: &Pagemap, size: u16) -> Result<Self> {
        let (d, a, u) = ring_bytes(size);
        if size == 0 || d > PAGE_SIZE || a > PAGE_SIZE || u > PAGE_SIZE {
            return Err(Error::Unsupported(format!(
                "queue size {size} not in 1..=256"
            )));
        }
        let desc = LockedPages::new(1)?;
        let avail = LockedPages::new(1)?;
        let used = LockedPages::new(1)?;
        let phys = (desc.phys(pm, 0)?, avail.phys(pm, 0)?, used.phys(pm, 0)?);
        Ok(SplitQueue {
            size,
            desc,
            avail,
            used,
            phys,
            next_avail: 0,
            last_used: 0,
        })
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Puts one request (a descriptor chain starting at descriptor 0) in the available ring.
    /// Only one request may be outstanding: call [`SplitQueue::wait_used`] before the next.
    pub fn push(&mut self, bufs: &[Buf]) -> Result<()> {
        self.push_batch(&[bufs]).map(|_| ())
    }

    /// Puts several requests in the available ring with one index update (see [`batch_descs`]);
    /// returns each one's head descriptor index. Only one batch may be outstanding: call
    /// [`SplitQueue::wait_used`] once per request before the next push.
    pub fn push_batch(&mut self, chains: &[&[Buf]]) -> Result<Vec<u16>> {
        let (descs, heads) = batch_descs(chains, self.size)?;
        for (i, d) in descs.iter().enumerate() {
            self.desc.write_bytes(i * DESC_SIZE, d);
        }
        for (k, &head) in heads.iter().enumerate() {
            let slot = self.next_avail.wrapping_add(k as u16) % self.size;
            self.avail.write_u16(avail_ring_offset(slot), head);
        }
        // The descriptors and the ring entries must be visible before the index moves.
        fence(Ordering::SeqCst);
        self.next_avail = self.next_avail.wrapping_add(heads.len() as u16);
        self.avail.write_u16(2, self.next_avail);
        fence(Ordering::SeqCst);
        Ok(heads)
    }

    /// Polls the used ring until the next outstanding request completes (bounded by `timeout`);
    /// returns (head descriptor id, bytes written by the device).
    pub fn wait_used(&mut self, timeout: Duration) -> Result<(u32, u32)> {
        let t0 = Instant::now();
        let mut spins = 0u32;
        loop {
            let idx = self.used.read_u16(2);
            if idx != self.last_used {
                fence(Ordering::SeqCst);
                let slot = self.last_used % self.size;
                let id = self.used.read_u32(used_elem_offset(slot));
                let len = self.used.read_u32(used_elem_offset(slot) + 4);
                self.last_used = self.last_used.wrapping_add(1);
                return Ok((id, len));
            }
            if t0.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "used ring (idx {idx}, expecting {})",
                        self.last_used.wrapping_add(1)
                    ),
                    ms: timeout.as_millis() as u64,
                });
            }
            spins += 1;
            if spins > 1000 {
                std::thread::sleep(Duration::from_micros(200));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_little_endian_and_linked() {
        let d = encode_desc(0x1122_3344_5566_7788, 0x99aa_bbcc, 0x0003, 0x0102);
        assert_eq!(
            d,
            [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xcc, 0xbb, 0xaa, 0x99, 3, 0, 2, 1]
        );
        let c = chain_descs(&[
            Buf {
                addr: 0x1000,
                len: 24,
                write: false,
            },
            Buf {
                addr: 0x2000,
                len: 96,
                write: false,
            },
            Buf {
                addr: 0x3000,
                len: 408,
                write: true,
            },
        ]);
        assert_eq!(c.len(), 3);
        assert_eq!(&c[0][12..16], &[1, 0, 1, 0]); // NEXT, next=1
        assert_eq!(&c[1][12..16], &[1, 0, 2, 0]); // NEXT, next=2
        assert_eq!(&c[2][12..16], &[2, 0, 0, 0]); // WRITE, end of chain
    }

    #[test]
    fn a_batch_lays_its_chains_one_after_the_other() {
        let b = |addr, write| Buf {
            addr,
            len: 16,
            write,
        };
        let one = [b(0x1000, false), b(0x2000, true)];
        let two = [b(0x3000, false), b(0x4000, false), b(0x5000, true)];
        let (descs, heads) = batch_descs(&[&one, &two, &one], 8).unwrap();
        assert_eq!(heads, vec![0, 2, 5]);
        assert_eq!(descs.len(), 7);
        assert_eq!(&descs[0][12..16], &[1, 0, 1, 0]); // NEXT -> 1
        assert_eq!(&descs[1][12..16], &[2, 0, 0, 0]); // WRITE, end of chain 0
        assert_eq!(&descs[2][12..16], &[1, 0, 3, 0]); // chain 1: 2 -> 3 -> 4
        assert_eq!(&descs[3][12..16], &[1, 0, 4, 0]);
        assert_eq!(&descs[4][12..16], &[2, 0, 0, 0]);
        assert_eq!(&descs[5][0..8], &0x1000u64.to_le_bytes());
        assert_eq!(&descs[5][12..16], &[1, 0, 6, 0]); // chain 2: 5 -> 6
        assert_eq!(chain_descs(&two), chain_descs_from(&two, 0));
        // Too many descriptors for the queue, empty batches and empty chains are refused.
        assert!(batch_descs(&[&two, &two, &two], 8).is_err());
        assert!(batch_descs(&[], 8).is_err());
        assert!(batch_descs(&[&one, &[]], 8).is_err());
    }

    #[test]
    fn ring_layout_matches_the_spec() {
        assert_eq!(ring_bytes(64), (1024, 134, 518));
        assert_eq!(avail_ring_offset(0), 4);
        assert_eq!(avail_ring_offset(63), 130);
        assert_eq!(used_elem_offset(1), 12);
        assert_eq!(ring_bytes(256).2, 2054);
    }
}
