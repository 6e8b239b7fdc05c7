//! MSI-X (PCI Local Bus 3.0, 6.8.2) as the guest programs it, for every device that offers it
//! (the virtio-pci transport and VFIO passthrough):
//!
//! - [`MsixTable`]: where the capability puts the vector table and the pending-bit array (PBA),
//!   the table and PBA themselves, and the enable and function-mask bits of message control.
//! - [`MsiVectors`]: the host side of a function's vectors (MSI-X, or MSI for VFIO): an eventfd
//!   and a GSI from the VM's [`MsiRouter`] each, and the one path that brings KVM's routes and
//!   irqfds in line with what the guest programmed, one routing-table update per guest write.

use std::sync::Arc;

use log_limit::{debug_limit_global, warn_limit_global};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::msi_routing::MsiRouter;
use crate::GUEST_LOG_INTERVAL;

/// Message control: MSI-X enable.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// Bytes per table entry: address low, address high, data, vector control.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Most vectors a function can have (table size field + 1).
pub const MAX_MSIX_VECTORS: u16 = 2048;
/// Vector control: mask bit (the only bit that exists).
const VECTOR_MASKED: u32 = 1;

/// Where the MSI-X structures are, from the capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCapInfo {
    /// Offset of the capability in config space.
    pub cap_offset: usize,
    /// Number of vectors.
    pub vectors: u16,
    /// BAR holding the table.
    pub table_bar: u32,
    /// Offset of the table in that BAR.
    pub table_offset: u64,
    /// BAR holding the PBA.
    pub pba_bar: u32,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u64,
}

impl MsixCapInfo {
    /// Decodes the capability from its first three dwords (ID/next/control, table, PBA).
    pub fn parse(cap_offset: usize, dw0: u32, table: u32, pba: u32) -> Self {
        let control = (dw0 >> 16) as u16;
        Self {
            cap_offset,
            vectors: (control & 0x7ff) + 1,
            table_bar: table & 0x7,
            table_offset: u64::from(table & !0x7),
            pba_bar: pba & 0x7,
            pba_offset: u64::from(pba & !0x7),
        }
    }

    /// Size of the table in bytes.
    pub fn table_size(&self) -> u64 {
        u64::from(self.vectors) * MSIX_ENTRY_SIZE
    }

    /// Size of the PBA in bytes (one bit per vector, in qwords).
    pub fn pba_size(&self) -> u64 {
        u64::from(self.vectors).div_ceil(64) * 8
    }
}

/// One table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message address (64-bit).
    pub address: u64,
    /// Message data.
    pub data: u32,
    /// Vector masked (bit 0 of vector control).
    pub masked: bool,
}

/// What a table write changed in its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableWrite {
    /// The entry written.
    pub vector: usize,
    /// Its address or data changed: its route must follow.
    pub route_changed: bool,
    /// Its mask bit changed.
    pub mask_changed: bool,
}

/// The MSI-X state of a function: table, PBA, enable and function mask.
///
/// Table accesses must be aligned dwords or qwords (PCI Local Bus 3.0, 6.8.2); others are
/// ignored (reads return zeros) with a rate-limited log line. The PBA is read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsixTable {
    info: MsixCapInfo,
    /// Enable and function-mask bits of message control.
    control: u16,
    /// The table as dwords: address low, address high, data, vector control per entry.
    table: Vec<u32>,
    /// Pending bits, one per vector.
    pending: Vec<u64>,
}

impl MsixTable {
    /// Reset state for the capability `info` (1 to 2048 vectors): disabled, every vector masked.
    pub fn new(info: MsixCapInfo) -> Self {
        let info = MsixCapInfo {
            vectors: info.vectors.clamp(1, MAX_MSIX_VECTORS),
            ..info
        };
        let n = usize::from(info.vectors);
        let mut table = vec![0u32; n * 4];
        for entry in table.chunks_mut(4) {
            entry[3] = VECTOR_MASKED;
        }
        Self {
            info,
            control: 0,
            table,
            pending: vec![0; n.div_ceil(64)],
        }
    }

    /// The capability's location.
    pub fn info(&self) -> &MsixCapInfo {
        &self.info
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.table.len() / 4
    }

    /// Never true (at least one vector).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The enable and function-mask bits of message control.
    pub fn control_bits(&self) -> u16 {
        self.control
    }

    /// Takes the enable and function-mask bits from a guest write of message control.
    pub fn write_control(&mut self, value: u16) {
        self.control = value & (MSIX_ENABLE | MSIX_FUNCTION_MASK);
    }

    /// MSI-X enabled by the guest.
    pub fn enabled(&self) -> bool {
        self.control & MSIX_ENABLE != 0
    }

    /// All vectors masked by the function mask.
    pub fn function_masked(&self) -> bool {
        self.control & MSIX_FUNCTION_MASK != 0
    }

    /// Entry `vector`.
    pub fn entry(&self, vector: usize) -> Option<MsixEntry> {
        let start = vector.checked_mul(4)?;
        let e = self.table.get(start..start.checked_add(4)?)?;
        Some(MsixEntry {
            address: u64::from(e[0]) | (u64::from(e[1]) << 32),
            data: e[2],
            masked: e[3] & VECTOR_MASKED != 0,
        })
    }

    /// Whether vector `v` may fire now (enabled, not function-masked, not masked).
    pub fn can_fire(&self, v: usize) -> bool {
        self.enabled() && !self.function_masked() && self.entry(v).is_some_and(|e| !e.masked)
    }

    /// Sets or clears the pending bit of `v`.
    pub fn set_pending(&mut self, v: usize, pending: bool) {
        if let Some(word) = self.pending.get_mut(v / 64) {
            let bit = 1u64 << (v % 64);
            if pending {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    /// Whether `v` is pending.
    pub fn is_pending(&self, v: usize) -> bool {
        self.pending
            .get(v / 64)
            .is_some_and(|w| w & (1u64 << (v % 64)) != 0)
    }

    /// True if `offset..offset+len` of BAR `bar` falls in the table.
    pub fn in_table(&self, bar: u32, offset: u64, len: usize) -> bool {
        bar == self.info.table_bar
            && in_range(offset, len, self.info.table_offset, self.info.table_size())
    }

    /// True if `offset..offset+len` of BAR `bar` falls in the PBA.
    pub fn in_pba(&self, bar: u32, offset: u64, len: usize) -> bool {
        bar == self.info.pba_bar
            && in_range(offset, len, self.info.pba_offset, self.info.pba_size())
    }

    /// The first table dword of a `len`-byte access at `offset` of the table's BAR, if it is an
    /// aligned dword or qword inside the table.
    fn table_dword(&self, offset: u64, len: usize) -> Option<usize> {
        if !matches!(len, 4 | 8) || !offset.is_multiple_of(len as u64) {
            return None;
        }
        let first = usize::try_from(offset.checked_sub(self.info.table_offset)? / 4).ok()?;
        (first.checked_add(len / 4)? <= self.table.len()).then_some(first)
    }

    /// Guest read of the table at `offset` of its BAR.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(first) = self.table_dword(offset, data.len()) else {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "msix: ignored {}-byte table read at {offset:#x}",
                data.len()
            );
            return;
        };
        for (chunk, dword) in data.chunks_exact_mut(4).zip(&self.table[first..]) {
            chunk.copy_from_slice(&dword.to_le_bytes());
        }
    }

    /// Guest write of the table at `offset` of its BAR. Returns what changed in the entry
    /// written (`None` for an access the table ignores).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Option<TableWrite> {
        let Some(first) = self.table_dword(offset, data.len()) else {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "msix: ignored {}-byte table write at {offset:#x}",
                data.len()
            );
            return None;
        };
        let mut write = TableWrite {
            vector: first / 4,
            route_changed: false,
            mask_changed: false,
        };
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let idx = first + i;
            let mut value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let is_control = idx % 4 == 3;
            if is_control {
                value &= VECTOR_MASKED;
            }
            if std::mem::replace(&mut self.table[idx], value) != value {
                if is_control {
                    write.mask_changed = true;
                } else {
                    write.route_changed = true;
                }
            }
        }
        Some(write)
    }

    /// Guest read of the PBA at `offset` of its BAR (any size; bytes beyond it read zero).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(start) = offset.checked_sub(self.info.pba_offset) else {
            return;
        };
        for (i, out) in data.iter_mut().enumerate() {
            let Some(byte) = start
                .checked_add(i as u64)
                .and_then(|b| usize::try_from(b).ok())
            else {
                break;
            };
            if let Some(word) = self.pending.get(byte / 8) {
                *out = (word >> ((byte % 8) * 8)) as u8;
            }
        }
    }
}

fn in_range(offset: u64, len: usize, start: u64, size: u64) -> bool {
    offset >= start
        && offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= start.saturating_add(size))
}

/// One vector's host side: the eventfd that raises it and the GSI KVM injects it on.
struct Vector {
    fd: EventFd,
    gsi: u32,
    /// Its irqfd is registered.
    live: bool,
}

/// The host side of a function's MSI or MSI-X vectors: an eventfd and a GSI each, taken from
/// the VM's [`MsiRouter`] and given back (irqfds detached, GSIs released in one call) when
/// this is released or dropped.
pub struct MsiVectors {
    router: Arc<dyn MsiRouter>,
    vectors: Vec<Vector>,
    /// Prefix of log lines ("vfio", "virtio-pci").
    owner: &'static str,
}

impl MsiVectors {
    /// `n` vectors, none routed yet; on an error every GSI taken so far is given back.
    pub fn new(
        router: Arc<dyn MsiRouter>,
        n: usize,
        owner: &'static str,
    ) -> Result<Self, crate::Error> {
        let mut out = Self {
            router,
            vectors: Vec::with_capacity(n),
            owner,
        };
        for _ in 0..n {
            let fd = EventFd::new(EFD_NONBLOCK).map_err(crate::Error::EventFd)?;
            let gsi = out.router.allocate_gsi()?;
            out.vectors.push(Vector {
                fd,
                gsi,
                live: false,
            });
        }
        Ok(out)
    }

    /// Attaches every vector's irqfd now (for a device that masks in software and only
    /// signals unmasked vectors).
    pub fn register_all(&mut self) -> Result<(), crate::Error> {
        for v in self.vectors.iter_mut().filter(|v| !v.live) {
            self.router.register_irqfd(&v.fd, v.gsi)?;
            v.live = true;
        }
        Ok(())
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// The eventfd of vector `v`.
    pub fn fd(&self, v: usize) -> Option<&EventFd> {
        self.vectors.get(v).map(|x| &x.fd)
    }

    /// The eventfds of all vectors, in order.
    pub fn fds(&self) -> Vec<&EventFd> {
        self.vectors.iter().map(|x| &x.fd).collect()
    }

    /// The GSI of vector `v`.
    pub fn gsi(&self, v: usize) -> Option<u32> {
        self.vectors.get(v).map(|x| x.gsi)
    }

    /// The GSIs of all vectors, in order.
    pub fn gsis(&self) -> Vec<u32> {
        self.vectors.iter().map(|x| x.gsi).collect()
    }

    /// Vectors whose irqfd is registered.
    pub fn live_vectors(&self) -> Vec<usize> {
        let live = self.vectors.iter().enumerate().filter(|(_, x)| x.live);
        live.map(|(i, _)| i).collect()
    }

    /// Brings vectors `which` in line with `message` (address and data; `None`: masked):
    /// masked vectors lose their irqfd, the others get their route and an irqfd. All routes go
    /// to the router in one batch, so a guest write that touches every vector (MSI-X enable,
    /// function mask) costs one routing-table update, not one per vector. Failures are logged:
    /// the guest keeps running.
    pub fn update(
        &mut self,
        which: impl IntoIterator<Item = usize>,
        message: impl Fn(usize) -> Option<(u64, u32)>,
    ) {
        let owner = self.owner;
        let mut routes = Vec::new();
        let mut to_register = Vec::new();
        for i in which {
            let Some(vec) = self.vectors.get_mut(i) else {
                continue;
            };
            match message(i) {
                None => {
                    if vec.live {
                        if let Err(e) = self.router.unregister_irqfd(&vec.fd, vec.gsi) {
                            warn_limit_global!(
                                1,
                                GUEST_LOG_INTERVAL,
                                "{owner}: masking vector on gsi {}: {e}",
                                vec.gsi
                            );
                        }
                        vec.live = false;
                    }
                }
                Some((address, data)) => {
                    routes.push((vec.gsi, address, data));
                    if !vec.live {
                        to_register.push(i);
                    }
                }
            }
        }
        if routes.is_empty() {
            return;
        }
        if let Err(e) = self.router.set_msi_routes(&routes) {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "{owner}: routing {} vector(s): {e}",
                routes.len()
            );
            return;
        }
        for i in to_register {
            let vec = &mut self.vectors[i];
            // KVM delivers an interrupt signalled while the vector was masked on registration.
            match self.router.register_irqfd(&vec.fd, vec.gsi) {
                Ok(()) => vec.live = true,
                Err(e) => warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "{owner}: irqfd on gsi {}: {e}",
                    vec.gsi
                ),
            }
        }
    }

    /// Detaches the registered irqfds and gives every GSI back to the router in one call;
    /// nothing is left afterwards.
    pub fn release(&mut self) {
        let owner = self.owner;
        for v in self.vectors.iter().filter(|v| v.live) {
            if let Err(e) = self.router.unregister_irqfd(&v.fd, v.gsi) {
                log::debug!("{owner}: {e}");
            }
        }
        let gsis = self.gsis();
        self.vectors.clear();
        if !gsis.is_empty() {
            self.router.release_gsis(&gsis);
        }
    }
}

impl Drop for MsiVectors {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 vectors, table in BAR 1 at 0x2000, PBA in BAR 1 at 0x3000.
    fn table() -> MsixTable {
        MsixTable::new(MsixCapInfo::parse(0x70, 0x0003_0011, 0x2001, 0x3001))
    }

    #[test]
    fn parse_cap() {
        let t = table();
        let i = t.info();
        assert_eq!(
            (
                i.vectors,
                i.table_bar,
                i.table_offset,
                i.pba_bar,
                i.pba_offset
            ),
            (4, 1, 0x2000, 1, 0x3000)
        );
        assert_eq!(i.table_size(), 64);
        assert_eq!(i.pba_size(), 8);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn entries_start_masked_and_unmask_is_reported() {
        let mut t = table();
        t.write_control(MSIX_ENABLE);
        assert!(!t.can_fire(1));
        let w = t.write_table(0x2010, &0xfee0_0000u32.to_le_bytes());
        assert_eq!(
            w,
            Some(TableWrite {
                vector: 1,
                route_changed: true,
                mask_changed: false
            })
        );
        let w = t.write_table(0x2018, &0x41u32.to_le_bytes()).unwrap();
        assert!(w.route_changed && !w.mask_changed);
        // Unmask; the reserved bits of vector control are dropped.
        let w = t
            .write_table(0x201c, &0xffff_fff0u32.to_le_bytes())
            .unwrap();
        assert!(w.mask_changed && !w.route_changed);
        assert!(t.can_fire(1));
        assert_eq!(
            t.entry(1).unwrap(),
            MsixEntry {
                address: 0xfee0_0000,
                data: 0x41,
                masked: false
            }
        );
        let mut d = [0u8; 8];
        t.read_table(0x2018, &mut d);
        assert_eq!(d, [0x41, 0, 0, 0, 0, 0, 0, 0]);
        t.write_control(MSIX_ENABLE | MSIX_FUNCTION_MASK);
        assert!(!t.can_fire(1));
    }

    #[test]
    fn table_reset_masked_and_programmed() {
        let mut t = table();
        assert!((0..4).all(|v| t.entry(v).unwrap().masked));
        // A qword write of the address.
        let w = t.write_table(0x2020, &0x1_fee0_1000u64.to_le_bytes());
        assert!(w.unwrap().route_changed);
        assert_eq!(t.entry(2).unwrap().address, 0x1_fee0_1000);
        let mut d = [0u8; 4];
        t.read_table(0x2024, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1);
        // Writing the same value again changes nothing.
        let w = t.write_table(0x2020, &0x1_fee0_1000u64.to_le_bytes());
        assert!(!w.unwrap().route_changed);
        // A qword write of data and vector control changes both.
        let w = t.write_table(0x2028, &0x0000_0000_0000_4042u64.to_le_bytes());
        assert_eq!(
            w,
            Some(TableWrite {
                vector: 2,
                route_changed: true,
                mask_changed: true
            })
        );
        assert_eq!(
            (t.entry(2).unwrap().data, t.entry(2).unwrap().masked),
            (0x4042, false)
        );
    }

    #[test]
    fn ranges_and_control() {
        let mut t = table();
        assert!(t.in_table(1, 0x2000, 4));
        assert!(t.in_table(1, 0x203c, 4));
        assert!(!t.in_table(1, 0x203e, 4));
        assert!(!t.in_table(0, 0x2000, 4));
        assert!(t.in_pba(1, 0x3000, 8));
        assert!(!t.in_pba(1, u64::MAX, 8));
        t.write_control(0xffff);
        assert!(t.enabled() && t.function_masked());
        assert_eq!(t.control_bits(), 0xc000);
    }

    #[test]
    fn hostile_accesses_are_ignored() {
        let mut t = table();
        let before = t.clone();
        // Unaligned, odd-sized, outside the table, overflowing.
        assert_eq!(t.write_table(0x2002, &[1, 2, 3, 4]), None);
        assert_eq!(t.write_table(0x2000, &[1, 2]), None);
        assert_eq!(t.write_table(0x2000, &[1; 16]), None);
        assert_eq!(t.write_table(0x2040, &[1, 2, 3, 4]), None);
        assert_eq!(t.write_table(0, &[1; 8]), None);
        assert_eq!(t.write_table(u64::MAX - 3, &[1, 2, 3, 4]), None);
        assert_eq!(t.write_table(1 << 40, &[1, 2, 3, 4]), None);
        assert_eq!(t, before);
    }

    #[test]
    fn hostile_table_accesses() {
        let t = table();
        let mut d = [0xaau8; 8];
        t.read_table(u64::MAX - 7, &mut d);
        assert_eq!(d, [0; 8]);
        let mut d = [0xaau8; 2];
        t.read_table(0x201c, &mut d);
        assert_eq!(d, [0; 2], "a word read of the table reads zeros");
        let mut p = [0xaau8; 3];
        t.read_pba(u64::MAX, &mut p);
        assert_eq!(p, [0; 3]);
        t.read_pba(0, &mut p);
        assert_eq!(p, [0; 3]);
        assert!(t.entry(4).is_none());
        assert!(t.entry(usize::MAX / 2).is_none());
        let huge = MsixTable::new(MsixCapInfo {
            vectors: u16::MAX,
            ..*t.info()
        });
        assert_eq!(huge.len(), usize::from(MAX_MSIX_VECTORS));
    }

    #[test]
    fn pending_bits_show_in_the_pba() {
        let mut t = MsixTable::new(MsixCapInfo {
            vectors: 70,
            ..*table().info()
        });
        t.set_pending(65, true);
        assert!(t.is_pending(65));
        let mut d = [0u8; 8];
        t.read_pba(0x3008, &mut d);
        assert_eq!(u64::from_le_bytes(d), 2);
        let mut b = [0u8; 1];
        t.read_pba(0x3008, &mut b);
        assert_eq!(b, [2]);
        t.set_pending(65, false);
        t.read_pba(0x3008, &mut d);
        assert_eq!(u64::from_le_bytes(d), 0);
        assert_eq!(t.info().pba_size(), 16);
    }

    /// KVM's MSI router for a fresh VM with GSIs 24..`gsi_end`, if this machine has KVM.
    fn kvm_router(gsi_end: u32) -> Option<Arc<crate::pci::KvmMsiRouter>> {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm: MSI vectors not exercised");
            return None;
        };
        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        Some(Arc::new(crate::pci::KvmMsiRouter::new(vm, gsi_end)))
    }

    #[test]
    fn vectors_are_routed_in_one_batch_and_released_in_one_call() {
        let Some(router) = kvm_router(1024) else {
            return;
        };
        let mut v = MsiVectors::new(router.clone(), 3, "test").unwrap();
        assert_eq!(v.gsis(), vec![24, 25, 26]);
        assert!(
            v.live_vectors().is_empty(),
            "nothing wired before the guest asks"
        );
        // Vector 1 masked: no route, no irqfd; the other two routed in one table update.
        v.update(0..3, |i| (i != 1).then_some((0xfee0_0000, 0x40 + i as u32)));
        assert_eq!(router.routing_updates(), 1);
        assert_eq!(v.live_vectors(), vec![0, 2]);
        // Masking vector 2 takes its irqfd away and does not touch the table.
        v.update([2], |_| None);
        assert_eq!(v.live_vectors(), vec![0]);
        assert_eq!(router.routing_updates(), 1);
        drop(v);
        // The GSIs are free again (their routes go with the next table update).
        let again: Vec<u32> = (0..3).map(|_| router.allocate_gsi().unwrap()).collect();
        assert_eq!(again.len(), 3);
        assert!(again.iter().all(|g| (24..27).contains(g)), "{again:?}");
        assert_eq!(router.routing_updates(), 1);
    }

    #[test]
    fn a_failed_allocation_gives_back_what_it_took() {
        let Some(router) = kvm_router(26) else {
            return;
        };
        let err = MsiVectors::new(router.clone(), 3, "test").err().unwrap();
        assert!(matches!(err, crate::Error::NoFreeGsi { .. }), "{err}");
        let v = MsiVectors::new(router.clone(), 2, "test").unwrap();
        assert_eq!(
            v.len(),
            2,
            "the two GSIs the failed attempt took are free again"
        );
        let mut none = MsiVectors::new(router, 0, "test").unwrap();
        none.register_all().unwrap();
        assert!(none.is_empty() && none.gsis().is_empty());
    }
}
