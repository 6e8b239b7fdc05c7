//! The trait every device on the PCI bus implements (host bridge, virtio-pci, VFIO).

use super::bar::{BarReprogram, BarSpace, PciBar};

/// A PCI function on bus 0.
///
/// The bus calls these from vCPU threads, under the device's `Mutex`; every argument comes
/// from the guest and must be checked (no panics).
///
/// Configuration space is accessed per dword: `reg_idx` is the dword index (offset / 4),
/// `offset` the byte within that dword and `data` 1, 2 or 4 bytes that do not cross it.
pub trait PciDevice: Send {
    /// A short name for logs ("host-bridge", "vfio 0000:00:03.0", ...).
    fn name(&self) -> String;

    /// Reads configuration dword `reg_idx` (0..64, or 0..1024 with extended space).
    /// Registers the device does not have read as all-ones.
    fn read_config_register(&mut self, reg_idx: usize) -> u32;

    /// Writes `data` at byte `offset` of configuration dword `reg_idx`.
    ///
    /// Returns the BAR move this write completes, if any (see
    /// [`PciConfigSpace::write_reg`](super::PciConfigSpace::write_reg) for the rules). The bus
    /// updates its BAR routing and then calls [`PciDevice::move_bar`].
    fn write_config_register(
        &mut self,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<BarReprogram>;

    /// The device's BARs with their current addresses.
    fn bars(&self) -> Vec<PciBar>;

    /// Programs BAR `index` to `addr` as firmware would, before the guest runs. Returns the
    /// resulting move (the bus routes it and calls [`PciDevice::move_bar`]).
    fn program_bar(&mut self, index: usize, addr: u64) -> Option<BarReprogram>;

    /// Whether the device decodes its BARs in `space` now: the command register's Memory
    /// Space (bit 1) or I/O Space (bit 0) enable. The router sends accesses only to BARs of a
    /// decoded space; the others read as all-ones and drop writes, as on real hardware.
    fn decodes(&self, space: BarSpace) -> bool;

    /// Reads from BAR `bar` at byte `offset` (relative to the BAR's start).
    /// `offset + data.len()` is within the BAR (the router checks); the access may be of any
    /// size and alignment the guest chose.
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]);

    /// Writes to BAR `bar` at byte `offset` (relative to the BAR's start).
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]);

    /// Follows a BAR move after the bus has re-routed it: a device whose BAR is backed by a
    /// KVM memory slot (VFIO) or an ioeventfd (virtio-pci) re-creates it at `new_addr`.
    /// An error is logged by the bus; the guest keeps running.
    fn move_bar(&mut self, _reprogram: &BarReprogram) -> Result<(), crate::Error> {
        Ok(())
    }
}
