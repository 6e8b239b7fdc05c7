//! Legacy PC devices a Linux guest expects on the port I/O bus.
//!
//! - [`SerialDevice`]: a 16550 UART (vm-superio) at 0x3f8, IRQ 4.
//! - [`I8042`]: the keyboard controller, used only for its CPU reset command.
//! - [`Cmos`]: the CMOS RTC/NVRAM at 0x70/0x71, reporting the host's UTC time in BCD.
//! - [`AcpiPm`]: the ACPI sleep control/status and reset registers at 0x600 (power off, reset).
//!
//! Every device implements [`vm_device::MutDevicePio`] so that it can be registered on a
//! `vm_device::device_manager::IoManager` inside a `Mutex`.

mod acpi_pm;
mod cmos;
mod i8042;
mod serial;
mod trigger;

pub use acpi_pm::{
    AcpiPm, AcpiPmEvent, AcpiPmHandler, ACPI_PM_PORT, ACPI_PM_PORT_LEN, RESET_OFFSET, RESET_VALUE,
    SLEEP_CONTROL_OFFSET, SLEEP_STATUS_OFFSET, SLEEP_TYPE_S5,
};
pub use cmos::{Cmos, CMOS_PORT_BASE, CMOS_PORT_LEN};
pub use i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
pub use serial::{SerialDevice, SERIAL_COM1_IRQ, SERIAL_COM1_PORT, SERIAL_PORT_LEN};
pub use trigger::EventFdTrigger;
