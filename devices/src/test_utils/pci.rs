//! A PCI device backed by plain bytes and an MSI router that records routes and irqfds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::lock;

use crate::pci::{
    BarKind, BarReprogram, BarSpace, MsiRouter, PciBar, PciConfigSpace, PciDevice, PciHeader,
};
use crate::Error;

/// A device with a 4 KiB 32-bit BAR 0, a 64 KiB 64-bit prefetchable BAR 2 and a 32-byte I/O
/// BAR 4, each backed by bytes (zeros until first written), recording the moves it is told
/// about.
pub struct FakePciDevice {
    config: PciConfigSpace,
    /// The bytes of each BAR, allocated at its first write.
    bars: Vec<Vec<u8>>,
    moves: Arc<Mutex<Vec<BarReprogram>>>,
    /// Refuse every [`PciDevice::move_bar`].
    pub fail_moves: bool,
}

impl FakePciDevice {
    /// Size of BAR 0.
    pub const BAR0_SIZE: u64 = 0x1000;
    /// Size of BAR 2.
    pub const BAR2_SIZE: u64 = 0x1_0000;
    /// Size of BAR 4 (I/O).
    pub const BAR4_SIZE: u64 = 0x20;

    /// The device and the list of moves it follows (in order).
    pub fn new() -> (Self, Arc<Mutex<Vec<BarReprogram>>>) {
        let mut config = PciConfigSpace::new(PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1110,
            class: 0x05,
            ..Default::default()
        });
        let bars = [
            (
                0,
                BarKind::Mem32 {
                    prefetchable: false,
                },
                Self::BAR0_SIZE,
            ),
            (2, BarKind::Mem64 { prefetchable: true }, Self::BAR2_SIZE),
            (4, BarKind::Io, Self::BAR4_SIZE),
        ];
        for (index, kind, size) in bars {
            config
                .add_bar(index, kind, size)
                .expect("the fake's BAR layout is valid");
        }
        let moves = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                config,
                bars: vec![Vec::new(); 5],
                moves: moves.clone(),
                fail_moves: false,
            },
            moves,
        )
    }

    /// The byte range of an access to `bar`. The router promises the access is inside the
    /// BAR; a broken promise panics here (the fake checks the caller).
    fn range(&self, bar: usize, offset: u64, len: usize) -> std::ops::Range<usize> {
        let size = self
            .config
            .bar(bar)
            .unwrap_or_else(|| panic!("access to BAR {bar}, which the device does not have"))
            .size;
        let end = offset
            .checked_add(len as u64)
            .expect("BAR access end overflows");
        assert!(
            end <= size,
            "access {offset:#x}+{len} outside BAR {bar} of {size:#x} bytes"
        );
        offset as usize..end as usize
    }
}

impl PciDevice for FakePciDevice {
    fn name(&self) -> String {
        "fake".into()
    }
    fn read_config_register(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }
    fn write_config_register(
        &mut self,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<BarReprogram> {
        self.config.write_reg(reg_idx, offset, data)
    }
    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }
    fn program_bar(&mut self, index: usize, addr: u64) -> Option<BarReprogram> {
        self.config.program_bar(index, addr)
    }
    fn decodes(&self, space: BarSpace) -> bool {
        self.config.decodes(space)
    }
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        let range = self.range(bar, offset, data.len());
        match self.bars[bar].get(range) {
            Some(bytes) => data.copy_from_slice(bytes),
            None => data.fill(0),
        }
    }
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        let range = self.range(bar, offset, data.len());
        let backing = &mut self.bars[bar];
        if backing.is_empty() {
            let size = self.config.bar(bar).map_or(0, |b| b.size);
            backing.resize(size as usize, 0);
        }
        backing[range].copy_from_slice(data);
    }
    fn move_bar(&mut self, reprogram: &BarReprogram) -> Result<(), Error> {
        if self.fail_moves {
            return Err(Error::BarOverflow {
                bar: reprogram.bar,
                addr: reprogram.new_addr,
                offset: reprogram.size,
            });
        }
        lock(&self.moves).push(*reprogram);
        Ok(())
    }
}

/// An MSI router handing out GSIs 24, 25, ... (never reused) and keeping the current routes
/// and irqfds as KVM would.
#[derive(Default)]
pub struct FakeMsiRouter {
    next: Mutex<u32>,
    /// Current MSI route per GSI; a released GSI loses its route.
    pub routes: Mutex<BTreeMap<u32, (u64, u32)>>,
    /// GSIs with a registered irqfd (with or without resample), in registration order.
    pub irqfds: Mutex<Vec<u32>>,
    /// GSIs given back, in order.
    pub released: Mutex<Vec<u32>>,
    /// Calls that would each rewrite KVM's whole routing table (`KVM_SET_GSI_ROUTING`).
    pub route_updates: AtomicU32,
    /// Calls giving GSIs back (one per batch).
    pub release_calls: AtomicU32,
    /// Refuse irqfds with a resample eventfd (as a VM without an in-kernel irqchip does).
    pub refuse_resample: bool,
}

impl FakeMsiRouter {
    /// Number of GSIs handed out so far.
    pub fn allocated(&self) -> u32 {
        *lock(&self.next)
    }

    /// (route updates, release calls) so far.
    pub fn calls(&self) -> (u32, u32) {
        (
            self.route_updates.load(Ordering::Relaxed),
            self.release_calls.load(Ordering::Relaxed),
        )
    }
}

impl MsiRouter for FakeMsiRouter {
    fn allocate_gsi(&self) -> Result<u32, Error> {
        let mut n = lock(&self.next);
        *n += 1;
        Ok(23 + *n)
    }
    fn release_gsi(&self, gsi: u32) {
        self.release_gsis(&[gsi]);
    }
    fn release_gsis(&self, gsis: &[u32]) {
        self.release_calls.fetch_add(1, Ordering::Relaxed);
        let mut routes = lock(&self.routes);
        for gsi in gsis {
            routes.remove(gsi);
        }
        lock(&self.released).extend_from_slice(gsis);
    }
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<(), Error> {
        self.set_msi_routes(&[(gsi, address, data)])
    }
    fn set_msi_routes(&self, routes: &[(u32, u64, u32)]) -> Result<(), Error> {
        self.route_updates.fetch_add(1, Ordering::Relaxed);
        let mut map = lock(&self.routes);
        for &(gsi, address, data) in routes {
            map.insert(gsi, (address, data));
        }
        Ok(())
    }
    fn register_irqfd(&self, _fd: &EventFd, gsi: u32) -> Result<(), Error> {
        lock(&self.irqfds).push(gsi);
        Ok(())
    }
    fn unregister_irqfd(&self, _fd: &EventFd, gsi: u32) -> Result<(), Error> {
        lock(&self.irqfds).retain(|g| *g != gsi);
        Ok(())
    }
    fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        _resample: &EventFd,
        gsi: u32,
    ) -> Result<(), Error> {
        if self.refuse_resample {
            return Err(Error::Irqfd {
                op: "KVM_IRQFD with resample",
                gsi,
                source: vmm_sys_util::errno::Error::new(libc::ENOSYS),
            });
        }
        self.register_irqfd(fd, gsi)
    }
}
