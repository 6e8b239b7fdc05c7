//! The modern virtio-pci transport (virtio 1.2, 4.1): BAR 0 holds the common configuration,
//! the ISR byte, the device configuration, the queue notification area and the MSI-X table
//! and PBA; vendor capabilities point the driver at them.
//!
//! Queue notifications are ioeventfds registered at the notify addresses (a trapped notify
//! write signals the same eventfd); each MSI-X vector is an irqfd whose GSI route follows the
//! guest's table entry.

use std::sync::{Arc, Mutex, MutexGuard};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use log_limit::{debug_limit_global, error_limit_global, warn_limit_global};
use virtio_bindings::virtio_ids::{VIRTIO_ID_GPU, VIRTIO_ID_INPUT};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::common_cfg::{CommonCfg, CommonCfgAction, QueueConfig, COMMON_CFG_SIZE, NO_VECTOR};
use super::device::{ActivatedQueue, InterruptSource, VirtioDevice, VirtioInterrupt};
use super::error::VirtioPciError;
use crate::pci::{
    BarKind, BarReprogram, BarSpace, MsiRouter, MsiVectors, MsixCapInfo, MsixTable, PciBar,
    PciConfigSpace, PciDevice, PciHeader, CAP_ID_MSIX, CAP_ID_VENDOR,
};
use crate::GUEST_LOG_INTERVAL;

/// Red Hat / virtio vendor ID.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern device IDs are 0x1040 + the virtio device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// Size of BAR 0.
pub const BAR0_SIZE: u64 = 0x8000;
/// Common configuration in BAR 0.
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// ISR status byte in BAR 0.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device configuration in BAR 0.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
const DEVICE_CFG_SIZE: u64 = 0x1000;
/// Queue notification area in BAR 0.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between the notify addresses of consecutive queues.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// MSI-X table in BAR 0.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// MSI-X pending-bit array in BAR 0.
pub const MSIX_PBA_OFFSET: u64 = 0x6000;

const CFG_TYPE_COMMON: u8 = 1;
const CFG_TYPE_NOTIFY: u8 = 2;
const CFG_TYPE_ISR: u8 = 3;
const CFG_TYPE_DEVICE: u8 = 4;
const CFG_TYPE_PCI: u8 = 5;
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// Registers and removes ioeventfds (KVM in the VMM, a fake in tests).
pub trait IoEventRegistrar: Send + Sync {
    /// Signal `fd` on any guest write to MMIO address `addr`.
    fn register(&self, fd: &EventFd, addr: u64) -> Result<(), crate::Error>;
    /// Stop doing so.
    fn unregister(&self, fd: &EventFd, addr: u64) -> Result<(), crate::Error>;
}

/// ioeventfds through `KVM_IOEVENTFD`.
pub struct KvmIoEvents(pub Arc<VmFd>);

impl IoEventRegistrar for KvmIoEvents {
    fn register(&self, fd: &EventFd, addr: u64) -> Result<(), crate::Error> {
        self.0
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|source| crate::Error::IoEventFd {
                op: "KVM_IOEVENTFD",
                addr,
                source,
            })
    }

    fn unregister(&self, fd: &EventFd, addr: u64) -> Result<(), crate::Error> {
        self.0
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|source| crate::Error::IoEventFd {
                op: "KVM_IOEVENTFD deassign",
                addr,
                source,
            })
    }
}

struct IrqState {
    msix: MsixTable,
    isr: u8,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    /// Eventfd, GSI and irqfd per vector (irqfds always attached: masking is done here).
    vectors: MsiVectors,
    warned_disabled: bool,
}

/// The transport's interrupt side, shared with the device's worker.
struct Interrupts {
    state: Mutex<IrqState>,
}

impl Interrupts {
    fn lock(&self) -> MutexGuard<'_, IrqState> {
        // The state stays consistent across a panic elsewhere (plain data): keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn fire(st: &IrqState, v: usize) {
    if let Some(fd) = st.vectors.fd(v) {
        if let Err(e) = fd.write(1) {
            error_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-pci: signalling MSI-X vector {v}: {e}"
            );
        }
    }
}

impl VirtioInterrupt for Interrupts {
    fn trigger(&self, source: InterruptSource) {
        let mut st = self.lock();
        let vector = match source {
            InterruptSource::Queue(i) => {
                st.isr |= ISR_QUEUE;
                st.queue_vectors
                    .get(usize::from(i))
                    .copied()
                    .unwrap_or(NO_VECTOR)
            }
            InterruptSource::Config => {
                st.isr |= ISR_CONFIG;
                st.config_vector
            }
        };
        if !st.msix.enabled() {
            if !st.warned_disabled {
                log::warn!("virtio-pci: interrupt while MSI-X is disabled (no INTx): dropped");
                st.warned_disabled = true;
            }
            return;
        }
        let v = usize::from(vector);
        if vector == NO_VECTOR || v >= st.vectors.len() {
            return;
        }
        if st.msix.can_fire(v) {
            fire(&st, v);
        } else {
            st.msix.set_pending(v, true);
        }
    }
}

/// A virtio device on the PCI bus.
pub struct VirtioPciDevice {
    name: String,
    config: PciConfigSpace,
    msix_cap: usize,
    /// Offset of the VIRTIO_PCI_CAP_PCI_CFG capability.
    pci_cfg_cap: usize,
    device: Box<dyn VirtioDevice>,
    common: CommonCfg,
    irq: Arc<Interrupts>,
    ioevents: Arc<dyn IoEventRegistrar>,
    notify: Vec<EventFd>,
    /// BAR 0 address the ioeventfds are registered at.
    ioevent_base: Option<u64>,
    mem: GuestMemoryMmap,
    active: bool,
}

fn vendor_cap(cfg_type: u8, offset: u32, length: u32, extra: &[u8]) -> Vec<u8> {
    // struct virtio_pci_cap after cap_vndr/cap_next: cap_len, cfg_type, bar, id, pad[2],
    // offset, length, then type-specific fields.
    let mut body = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&length.to_le_bytes());
    body.extend_from_slice(extra);
    body
}

impl VirtioPciDevice {
    /// Wraps `device`: builds the configuration space, allocates one MSI-X vector per queue
    /// plus one for configuration changes (GSIs and irqfds from `router`) and one notify
    /// eventfd per queue (registered through `ioevents` when BAR 0 gets an address).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        router: Arc<dyn MsiRouter>,
        ioevents: Arc<dyn IoEventRegistrar>,
    ) -> Result<Self, VirtioPciError> {
        let device_type = device.device_type();
        let sizes = device.queue_max_sizes();
        for (index, &size) in sizes.iter().enumerate() {
            Queue::new(size).map_err(|source| VirtioPciError::Queue {
                index,
                size,
                source,
            })?;
        }
        let num_queues = sizes.len();
        let (class, subclass) = match device_type {
            VIRTIO_ID_GPU => (0x03, 0x80),   // display controller, other
            VIRTIO_ID_INPUT => (0x09, 0x80), // input device controller, other
            _ => (0xff, 0x00),
        };
        let header = PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_DEVICE_ID_BASE + device_type as u16,
            revision: 1,
            class,
            subclass,
            prog_if: 0,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: 0x40,
            interrupt_pin: 0,
        };
        let mut config = PciConfigSpace::new(header);
        config.add_bar(
            0,
            BarKind::Mem64 {
                prefetchable: false,
            },
            BAR0_SIZE,
        )?;
        let ro = |body: &[u8]| vec![0u8; body.len()];
        for body in [
            vendor_cap(
                CFG_TYPE_COMMON,
                COMMON_CFG_OFFSET as u32,
                COMMON_CFG_SIZE as u32,
                &[],
            ),
            vendor_cap(CFG_TYPE_ISR, ISR_OFFSET as u32, 4, &[]),
            vendor_cap(
                CFG_TYPE_DEVICE,
                DEVICE_CFG_OFFSET as u32,
                DEVICE_CFG_SIZE as u32,
                &[],
            ),
            vendor_cap(
                CFG_TYPE_NOTIFY,
                NOTIFY_OFFSET as u32,
                (num_queues as u32).max(1) * NOTIFY_OFF_MULTIPLIER,
                &NOTIFY_OFF_MULTIPLIER.to_le_bytes(),
            ),
        ] {
            config.add_capability(CAP_ID_VENDOR, &body, &ro(&body))?;
        }
        // VIRTIO_PCI_CAP_PCI_CFG: a window into BAR 0 through configuration space
        // (bar, offset, length chosen by the driver, then pci_cfg_data read or written).
        let pci_cfg = vendor_cap(CFG_TYPE_PCI, 0, 0, &[0; 4]);
        let mut pci_cfg_mask = vec![0u8; pci_cfg.len()];
        pci_cfg_mask[2] = 0xff; // bar
        pci_cfg_mask[6..18].fill(0xff); // offset, length, data
        let pci_cfg_cap = config.add_capability(CAP_ID_VENDOR, &pci_cfg, &pci_cfg_mask)?;

        let vectors = num_queues + 1;
        let mut msix_body = Vec::new();
        msix_body.extend_from_slice(&((vectors - 1) as u16).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes()); // BIR 0
        msix_body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
        let mut msix_mask = vec![0u8; msix_body.len()];
        msix_mask[1] = 0xc0; // enable, function mask
        let msix_cap = config.add_capability(CAP_ID_MSIX, &msix_body, &msix_mask)?;

        let mut irqfds =
            MsiVectors::new(router, vectors, "virtio-pci").map_err(VirtioPciError::Msi)?;
        irqfds.register_all().map_err(VirtioPciError::Msi)?;
        let notify = (0..num_queues)
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(VirtioPciError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        let common = CommonCfg::new(device.device_features(), &sizes);
        let irq = Arc::new(Interrupts {
            state: Mutex::new(IrqState {
                msix: MsixTable::new(MsixCapInfo {
                    cap_offset: msix_cap,
                    vectors: vectors as u16,
                    table_bar: 0,
                    table_offset: MSIX_TABLE_OFFSET,
                    pba_bar: 0,
                    pba_offset: MSIX_PBA_OFFSET,
                }),
                isr: 0,
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; num_queues],
                vectors: irqfds,
                warned_disabled: false,
            }),
        });
        Ok(VirtioPciDevice {
            name: format!("virtio-pci type {device_type}"),
            config,
            msix_cap,
            pci_cfg_cap,
            device,
            common,
            irq,
            ioevents,
            notify,
            ioevent_base: None,
            mem,
            active: false,
        })
    }

    /// Whether the device was activated (DRIVER_OK) and not reset since.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Device status register.
    pub fn status(&self) -> u8 {
        self.common.status
    }

    /// The notify eventfd of queue `index` (tests, diagnostics).
    pub fn notify_fd(&self, index: usize) -> Option<&EventFd> {
        self.notify.get(index)
    }

    /// The irqfd and GSI of MSI-X vector `v`.
    pub fn vector_irqfd(&self, v: usize) -> Option<(EventFd, u32)> {
        let st = self.irq.lock();
        let fd = st.vectors.fd(v)?.try_clone().ok()?;
        Some((fd, st.vectors.gsi(v)?))
    }

    fn sync_vectors(&mut self) {
        let mut st = self.irq.lock();
        let n = st.vectors.len() as u16;
        // A vector the device cannot use reads back as NO_VECTOR (spec 4.1.5.1.2).
        if self.common.config_msix_vector >= n {
            self.common.config_msix_vector = NO_VECTOR;
        }
        st.config_vector = self.common.config_msix_vector;
        for (i, q) in self.common.queues.iter_mut().enumerate() {
            if q.msix_vector >= n {
                q.msix_vector = NO_VECTOR;
            }
            if let Some(slot) = st.queue_vectors.get_mut(i) {
                *slot = q.msix_vector;
            }
        }
    }

    /// Hands the enabled queues to the device. Called once per reset at most (the common
    /// configuration reports DRIVER_OK only the first time it is set); an active device is
    /// never activated again.
    fn activate(&mut self) {
        if self.active {
            return;
        }
        let mut queues = Vec::new();
        for (i, qc) in self.common.queues.iter().enumerate() {
            if !qc.enabled {
                continue;
            }
            let q = match split_queue(qc, &self.mem) {
                Ok(q) => q,
                Err(why) => {
                    warn_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "virtio-pci: guest error: queue {i} (size {} of at most {}, desc {:#x}, driver {:#x}, device {:#x}) refused: {why}",
                        qc.size,
                        qc.max_size,
                        qc.desc,
                        qc.driver,
                        qc.device
                    );
                    return self.fail();
                }
            };
            let notify = match self.notify.get(i).map(EventFd::try_clone) {
                Some(Ok(fd)) => fd,
                _ => {
                    error_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "virtio-pci: cloning the notify eventfd of queue {i}"
                    );
                    return self.fail();
                }
            };
            queues.push(ActivatedQueue {
                index: i as u16,
                queue: q,
                notify,
            });
        }
        let interrupt: Arc<dyn VirtioInterrupt> = self.irq.clone();
        match self.device.activate(self.mem.clone(), interrupt, queues) {
            Ok(()) => self.active = true,
            Err(e) => {
                error_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "virtio-pci: activating {}: {e}",
                    self.name
                );
                self.fail();
            }
        }
    }

    /// Marks the device as needing a reset and tells the driver.
    fn fail(&mut self) {
        self.common.status |= virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
        self.irq.trigger(InterruptSource::Config);
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        let mut st = self.irq.lock();
        st.isr = 0;
        st.config_vector = NO_VECTOR;
        st.queue_vectors.fill(NO_VECTOR);
        // Drain stale notifications.
        for fd in &self.notify {
            let _ = fd.read();
        }
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        match self.common.write(offset, data) {
            CommonCfgAction::None => {}
            CommonCfgAction::Reset => self.reset(),
            CommonCfgAction::FeaturesOk(f) => self.device.ack_features(f),
            CommonCfgAction::DriverOk => self.activate(),
            CommonCfgAction::VectorsChanged => self.sync_vectors(),
        }
    }

    fn write_msix_table(&mut self, offset: u64, data: &[u8]) {
        let mut st = self.irq.lock();
        let Some(w) = st.msix.write_table(offset, data) else {
            return;
        };
        let v = w.vector;
        if w.route_changed {
            // Masking is done here (a masked vector is not signalled), so every vector keeps its
            // route and irqfd whatever its mask bit.
            let IrqState { msix, vectors, .. } = &mut *st;
            vectors.update([v], |i| msix.entry(i).map(|e| (e.address, e.data)));
        }
        if w.mask_changed && st.msix.is_pending(v) && st.msix.can_fire(v) {
            st.msix.set_pending(v, false);
            fire(&st, v);
        }
    }

    fn msix_control_changed(&mut self) {
        let ctrl = (self.config.read_reg(self.msix_cap / 4) >> 16) as u16;
        let mut st = self.irq.lock();
        st.msix.write_control(ctrl);
        for v in 0..st.msix.len() {
            if st.msix.is_pending(v) && st.msix.can_fire(v) {
                st.msix.set_pending(v, false);
                fire(&st, v);
            }
        }
    }

    /// The BAR 0 access the PCI_CFG window describes: (offset, length) when the driver chose
    /// BAR 0 and a length of 1, 2 or 4 (other choices access nothing, spec 4.1.4.9).
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let mut b = [0u8; 1];
        self.config.read_bytes(self.pci_cfg_cap + 4, &mut b);
        let offset = self.config.read_reg((self.pci_cfg_cap + 8) / 4);
        let length = self.config.read_reg((self.pci_cfg_cap + 12) / 4);
        (b[0] == 0 && matches!(length, 1 | 2 | 4)).then_some((u64::from(offset), length as usize))
    }

    /// Keeps the ioeventfds where the guest can reach them: at BAR 0's notify addresses while
    /// the device decodes memory and BAR 0 has an address, nowhere otherwise (a notify with
    /// memory decoding off must not reach a queue).
    fn sync_ioevents(&mut self) {
        let bar0 = self.config.bars().first().map_or(0, |b| b.addr);
        let want = if self.config.decodes(BarSpace::Mmio) {
            bar0
        } else {
            0
        };
        if self.ioevent_base.unwrap_or(0) != want {
            self.register_ioevents(want);
        }
    }

    fn register_ioevents(&mut self, base: u64) {
        if let Some(old) = self.ioevent_base.take() {
            for (i, fd) in self.notify.iter().enumerate() {
                let addr = old + NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
                if let Err(e) = self.ioevents.unregister(fd, addr) {
                    error_limit_global!(1, GUEST_LOG_INTERVAL, "virtio-pci: {e}");
                }
            }
        }
        if base == 0 {
            return;
        }
        for (i, fd) in self.notify.iter().enumerate() {
            let addr = base + NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
            if let Err(e) = self.ioevents.register(fd, addr) {
                // Notify writes then trap and are forwarded by write_bar: slower, still correct.
                error_limit_global!(1, GUEST_LOG_INTERVAL, "virtio-pci: {e}");
            }
        }
        self.ioevent_base = Some(base);
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.register_ioevents(0);
        // The device's worker may still hold the interrupt side: its vectors go now, not with it.
        self.irq.lock().vectors.release();
    }
}

/// The split virtqueue the driver set up in `qc` (virtio 1.2, 2.7), checked before
/// virtio-queue sees it: a size of 1..=max that is a power of two, aligned ring addresses
/// (descriptor table 16, driver ring 2, device ring 4) and rings inside guest memory.
/// virtio-queue's own setters keep the old value of a refused setting (its maximum size, a
/// default address) and log each refusal; the checks here refuse the queue instead.
fn split_queue(qc: &QueueConfig, mem: &GuestMemoryMmap) -> Result<Queue, String> {
    if !qc.size_is_valid() {
        return Err("the size must be a power of two from 1 to the maximum".into());
    }
    let mut q = Queue::new(qc.max_size).map_err(|e| format!("maximum size: {e}"))?;
    q.try_set_size(qc.size).map_err(|e| format!("size: {e}"))?;
    let n = u64::from(qc.size);
    // Descriptor table, driver ring (flags, idx, ring, used_event), device ring (flags, idx,
    // ring of id/len pairs, avail_event).
    let parts = [
        ("descriptor table", qc.desc, 16 * n),
        ("driver ring", qc.driver, 6 + 2 * n),
        ("device ring", qc.device, 6 + 8 * n),
    ];
    q.try_set_desc_table_address(GuestAddress(qc.desc))
        .and_then(|()| q.try_set_avail_ring_address(GuestAddress(qc.driver)))
        .and_then(|()| q.try_set_used_ring_address(GuestAddress(qc.device)))
        .map_err(|e| format!("ring address: {e}"))?;
    for (what, addr, len) in parts {
        let inside = usize::try_from(len)
            .is_ok_and(|len| GuestMemoryBackend::check_range(mem, GuestAddress(addr), len));
        if !inside {
            return Err(format!("the {what} ({len} bytes) is not in guest memory"));
        }
    }
    q.set_ready(true);
    Ok(q)
}

fn in_range(offset: u64, len: usize, start: u64, size: u64) -> bool {
    offset >= start && offset.saturating_add(len as u64) <= start + size
}

impl PciDevice for VirtioPciDevice {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn read_config_register(&mut self, reg_idx: usize) -> u32 {
        if reg_idx >= self.config.size() / 4 {
            return u32::MAX;
        }
        if reg_idx == (self.pci_cfg_cap + 16) / 4 {
            if let Some((offset, len)) = self.pci_cfg_window() {
                let mut d = [0u8; 4];
                self.read_bar(0, offset, &mut d[..len]);
                self.config.set_reg(reg_idx, u32::from_le_bytes(d));
            }
        }
        self.config.read_reg(reg_idx)
    }

    fn write_config_register(
        &mut self,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<BarReprogram> {
        let moved = self.config.write_reg(reg_idx, offset, data);
        // A command register write may turn memory decoding on or off.
        self.sync_ioevents();
        if reg_idx == self.msix_cap / 4 {
            self.msix_control_changed();
        }
        if reg_idx == (self.pci_cfg_cap + 16) / 4 {
            if let Some((bar_offset, len)) = self.pci_cfg_window() {
                let d = self.config.read_reg(reg_idx).to_le_bytes();
                self.write_bar(0, bar_offset, &d[..len]);
            }
        }
        moved
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
        data.fill(0);
        if bar != 0 {
            return;
        }
        let len = data.len();
        if in_range(offset, len, COMMON_CFG_OFFSET, COMMON_CFG_SIZE) {
            self.common.read(offset - COMMON_CFG_OFFSET, data);
        } else if in_range(offset, len, ISR_OFFSET, 4) {
            // Read-to-clear (an empty read reads nothing and clears nothing).
            let mut st = self.irq.lock();
            if let (ISR_OFFSET, Some(first)) = (offset, data.first_mut()) {
                *first = st.isr;
                st.isr = 0;
            }
        } else if in_range(offset, len, DEVICE_CFG_OFFSET, DEVICE_CFG_SIZE) {
            self.device.read_config(offset - DEVICE_CFG_OFFSET, data);
        } else {
            let st = self.irq.lock();
            if st.msix.in_table(0, offset, len) {
                st.msix.read_table(offset, data);
            } else if st.msix.in_pba(0, offset, len) {
                st.msix.read_pba(offset, data);
            }
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        let len = data.len();
        if in_range(offset, len, COMMON_CFG_OFFSET, COMMON_CFG_SIZE) {
            self.write_common(offset - COMMON_CFG_OFFSET, data);
        } else if in_range(offset, len, DEVICE_CFG_OFFSET, DEVICE_CFG_SIZE) {
            self.device.write_config(offset - DEVICE_CFG_OFFSET, data);
        } else if in_range(
            offset,
            len,
            NOTIFY_OFFSET,
            self.notify.len() as u64 * u64::from(NOTIFY_OFF_MULTIPLIER),
        ) {
            // Only reached when the ioeventfd is not registered.
            let q = ((offset - NOTIFY_OFFSET) / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
            if let Some(fd) = self.notify.get(q) {
                if let Err(e) = fd.write(1) {
                    error_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "virtio-pci: notify of queue {q}: {e}"
                    );
                }
            }
        } else if self.irq.lock().msix.in_table(0, offset, len) {
            self.write_msix_table(offset, data);
        } else {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-pci: ignored {len}-byte write at BAR 0 offset {offset:#x}"
            );
        }
    }

    fn move_bar(&mut self, reprogram: &BarReprogram) -> Result<(), crate::Error> {
        if reprogram.bar == 0 {
            self.sync_ioevents();
        }
        Ok(())
    }
}
