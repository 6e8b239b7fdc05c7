//! Interrupt wiring of a passed-through device: INTx, MSI or MSI-X, whichever the guest
//! enabled, through eventfds that VFIO signals and KVM irqfds on GSIs routed by an
//! [`MsiRouter`].

use std::sync::Arc;

use log::info;
use log_limit::{info_limit_global, warn_limit_global};
use vmm_sys_util::eventfd::EventFd;

use super::config::VfioPciConfig;
use super::region_set::{VfioRegionSet, IRQ_INTX, IRQ_MSI, IRQ_MSIX};
use crate::pci::{MsiRouter, MsiVectors};
use crate::GUEST_LOG_INTERVAL;

/// The interrupt mode in force.
enum Mode {
    Off,
    Intx {
        fd: EventFd,
        resample: EventFd,
        gsi: u32,
    },
    Msi(MsiVectors),
    Msix(MsiVectors),
}

/// Which mode the guest asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqModeKind {
    /// No interrupts.
    Off,
    /// Legacy INTx.
    Intx,
    /// MSI with this many vectors.
    Msi(u32),
    /// MSI-X with this many vectors.
    Msix(u32),
}

impl IrqModeKind {
    /// 0..4, one per kind whatever the vector count.
    fn kind_index(self) -> u32 {
        match self {
            IrqModeKind::Off => 0,
            IrqModeKind::Intx => 1,
            IrqModeKind::Msi(_) => 2,
            IrqModeKind::Msix(_) => 3,
        }
    }
}

/// Interrupt state of one passed-through device.
pub struct VfioInterrupts {
    router: Arc<dyn MsiRouter>,
    intx_gsi: Option<u32>,
    mode: Mode,
    /// Mode changes (from kind, to kind) this device has logged, one bit each: the first of
    /// each is always logged, repeats are rate-limited.
    logged_changes: u16,
}

impl VfioInterrupts {
    /// Interrupts routed through `router`; INTx (if the device has it) goes to irqchip pin
    /// `intx_gsi`.
    pub fn new(router: Arc<dyn MsiRouter>, intx_gsi: Option<u32>) -> Self {
        Self {
            router,
            intx_gsi,
            mode: Mode::Off,
            logged_changes: 0,
        }
    }

    /// The mode in force.
    pub fn mode(&self) -> IrqModeKind {
        match &self.mode {
            Mode::Off => IrqModeKind::Off,
            Mode::Intx { .. } => IrqModeKind::Intx,
            Mode::Msi(v) => IrqModeKind::Msi(v.len() as u32),
            Mode::Msix(v) => IrqModeKind::Msix(v.len() as u32),
        }
    }

    /// GSIs of the vectors in force (for tests and logs).
    pub fn gsis(&self) -> Vec<u32> {
        match &self.mode {
            Mode::Off => Vec::new(),
            Mode::Intx { gsi, .. } => vec![*gsi],
            Mode::Msi(v) | Mode::Msix(v) => v.gsis(),
        }
    }

    /// Live (unmasked, routed) vector numbers.
    pub fn live_vectors(&self) -> Vec<usize> {
        match &self.mode {
            Mode::Msi(v) | Mode::Msix(v) => v.live_vectors(),
            _ => Vec::new(),
        }
    }

    fn wanted(&self, dev: &dyn VfioRegionSet, config: &VfioPciConfig) -> IrqModeKind {
        if let Some(m) = config.msix().filter(|m| m.enabled()) {
            let n = u32::from(m.info().vectors).min(dev.irq_count(IRQ_MSIX));
            if n > 0 {
                return IrqModeKind::Msix(n);
            }
        }
        if let Some(c) = config.msi().map(|m| m.config()).filter(|c| c.enabled) {
            let n = c.vectors.min(dev.irq_count(IRQ_MSI));
            if n > 0 {
                return IrqModeKind::Msi(n);
            }
        }
        if self.intx_gsi.is_some() && dev.irq_count(IRQ_INTX) > 0 {
            return IrqModeKind::Intx;
        }
        IrqModeKind::Off
    }

    /// Brings the wiring in line with what the guest programmed (after a config write that
    /// touched MSI/MSI-X, or at start for INTx). Errors are logged: the guest keeps running.
    pub fn update(&mut self, dev: &dyn VfioRegionSet, config: &VfioPciConfig) {
        let wanted = self.wanted(dev, config);
        let was = self.mode();
        if wanted != was {
            self.shutdown(dev);
            if let Err(e) = self.setup(dev, wanted) {
                warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "vfio {}: enabling {wanted:?}: {e}",
                    dev.name()
                );
                self.shutdown(dev);
                return;
            }
            self.log_change(dev, was, wanted);
        }
        self.refresh_all(config);
    }

    /// Logs a mode change: the first change between two kinds of mode on this device always
    /// (at most 12 lines per device), repeats at most once per [`GUEST_LOG_INTERVAL`], since a
    /// guest can toggle MSI/MSI-X enable at will.
    fn log_change(&mut self, dev: &dyn VfioRegionSet, was: IrqModeKind, now: IrqModeKind) {
        let bit = 1u16 << (was.kind_index() * 4 + now.kind_index());
        let first = self.logged_changes & bit == 0;
        self.logged_changes |= bit;
        let gsis = self.gsis();
        if first {
            info!(
                "vfio {}: interrupts {was:?} -> {now:?}, GSIs {gsis:?}",
                dev.name()
            );
        } else {
            info_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "vfio {}: interrupts {was:?} -> {now:?}, GSIs {gsis:?}",
                dev.name()
            );
        }
    }

    /// Re-applies the table entries `vectors` after MSI-X table writes.
    pub fn update_msix_vectors(&mut self, config: &VfioPciConfig, vectors: &[usize]) {
        if let Mode::Msix(v) = &mut self.mode {
            v.update(vectors.iter().copied(), |i| msix_message(config, i));
        }
    }

    /// Re-applies every vector of the mode in force (after a mode change, the function mask,
    /// an MSI capability write): one routing-table update for all of them.
    fn refresh_all(&mut self, config: &VfioPciConfig) {
        match &mut self.mode {
            Mode::Msix(v) => {
                let n = v.len();
                v.update(0..n, |i| msix_message(config, i));
            }
            Mode::Msi(v) => {
                let Some(c) = config.msi().map(|m| m.config()) else {
                    return;
                };
                let n = v.len();
                v.update(0..n, |i| {
                    let masked = c.mask_bits & (1 << i) != 0;
                    (!masked).then_some((c.address, c.data | i as u32))
                });
            }
            _ => {}
        }
    }

    fn setup(&mut self, dev: &dyn VfioRegionSet, kind: IrqModeKind) -> Result<(), crate::Error> {
        match kind {
            IrqModeKind::Off => {}
            IrqModeKind::Intx => {
                let gsi = self.intx_gsi.ok_or(crate::Error::NoIntxPin)?;
                let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(crate::Error::EventFd)?;
                let resample = EventFd::new(libc::EFD_NONBLOCK).map_err(crate::Error::EventFd)?;
                self.router
                    .register_irqfd_with_resample(&fd, &resample, gsi)?;
                self.mode = Mode::Intx { fd, resample, gsi };
                if let Mode::Intx { fd, resample, .. } = &self.mode {
                    dev.enable_irq(IRQ_INTX, &[fd])?;
                    dev.set_irq_resample(IRQ_INTX, resample)?;
                }
            }
            IrqModeKind::Msi(n) | IrqModeKind::Msix(n) => {
                let v = MsiVectors::new(self.router.clone(), n as usize, "vfio")?;
                let msix = matches!(kind, IrqModeKind::Msix(_));
                let r = dev.enable_irq(if msix { IRQ_MSIX } else { IRQ_MSI }, &v.fds());
                // Kept even when VFIO refused: shutdown gives the vectors back.
                self.mode = if msix { Mode::Msix(v) } else { Mode::Msi(v) };
                r?;
            }
        }
        Ok(())
    }

    /// Turns everything off: VFIO stops signalling, irqfds go, GSIs are released.
    pub fn shutdown(&mut self, dev: &dyn VfioRegionSet) {
        let router = self.router.clone();
        match std::mem::replace(&mut self.mode, Mode::Off) {
            Mode::Off => {}
            Mode::Intx { fd, gsi, .. } => {
                let _ = dev.disable_irq(IRQ_INTX);
                let _ = router.unregister_irqfd(&fd, gsi);
            }
            mode @ (Mode::Msi(_) | Mode::Msix(_)) => {
                let (index, mut v) = match mode {
                    Mode::Msi(v) => (IRQ_MSI, v),
                    Mode::Msix(v) => (IRQ_MSIX, v),
                    _ => return,
                };
                if let Err(e) = dev.disable_irq(index) {
                    warn_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "vfio {}: disabling interrupts: {e}",
                        dev.name()
                    );
                }
                // After VFIO stopped signalling: irqfds detached, GSIs given back.
                v.release();
            }
        }
    }
}

/// The message MSI-X vector `i` sends, or `None` while it is masked (its own mask bit or
/// the function mask).
fn msix_message(config: &VfioPciConfig, i: usize) -> Option<(u64, u32)> {
    let m = config.msix()?;
    let e = m.entry(i)?;
    (!e.masked && !m.function_masked()).then_some((e.address, e.data))
}
