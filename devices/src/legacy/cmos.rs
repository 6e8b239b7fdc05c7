//! CMOS RTC and NVRAM at ports 0x70 (index) and 0x71 (data).
//!
//! The clock registers report the host's current UTC time in BCD, 24-hour mode, with the
//! update-in-progress bit always clear, so Linux's `mach_get_cmos_time()` and `rtc_cmos` read a
//! sane time without waiting for an update cycle. Other registers are plain NVRAM.

use std::time::{SystemTime, UNIX_EPOCH};

use log_limit::debug_limit_global;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use crate::GUEST_LOG_INTERVAL;

/// Index port of the CMOS; the data port follows it.
pub const CMOS_PORT_BASE: u16 = 0x70;
/// Ports decoded: index and data.
pub const CMOS_PORT_LEN: u16 = 2;

const NVRAM_SIZE: usize = 128;
/// Bit 7 of the index port disables NMIs on real hardware; it is not part of the index.
const INDEX_MASK: u8 = 0x7f;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// 32.768 kHz time base, 1024 Hz rate; UIP (bit 7) clear.
const STATUS_A_VALUE: u8 = 0x26;
/// 24-hour mode, BCD, no interrupts enabled.
const STATUS_B_VALUE: u8 = 0x02;
/// Valid RAM and time.
const STATUS_D_VALUE: u8 = 0x80;

/// A broken-down UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: u32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    /// 0..=23
    pub hour: u32,
    /// 0..=59
    pub minute: u32,
    /// 0..=59
    pub second: u32,
    /// 1 = Sunday .. 7 = Saturday (the RTC's convention).
    pub weekday: u32,
}

impl DateTime {
    /// Converts seconds since the Unix epoch (UTC) to a date, proleptic Gregorian calendar.
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Civil-from-days (H. Hinnant's algorithm), shifted so that eras start on March 1st.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        DateTime {
            year: year as u32,
            month: month as u32,
            day: day as u32,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            // 1970-01-01 was a Thursday (weekday 5 with Sunday = 1).
            weekday: ((days + 4) % 7 + 1) as u32,
        }
    }
}

fn bcd(v: u32) -> u8 {
    let v = v % 100;
    ((v / 10) << 4 | (v % 10)) as u8
}

fn host_unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The CMOS device. Register it at [`CMOS_PORT_BASE`] with length [`CMOS_PORT_LEN`].
pub struct Cmos {
    index: u8,
    nvram: [u8; NVRAM_SIZE],
    clock: Box<dyn Fn() -> u64 + Send>,
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new()
    }
}

impl Cmos {
    /// A CMOS whose RTC follows the host clock.
    pub fn new() -> Self {
        Self::with_clock(Box::new(host_unix_time))
    }

    /// A CMOS whose RTC reads `clock()` (seconds since the Unix epoch, UTC).
    pub fn with_clock(clock: Box<dyn Fn() -> u64 + Send>) -> Self {
        let mut nvram = [0u8; NVRAM_SIZE];
        nvram[REG_STATUS_A as usize] = STATUS_A_VALUE;
        nvram[REG_STATUS_B as usize] = STATUS_B_VALUE;
        nvram[REG_STATUS_D as usize] = STATUS_D_VALUE;
        Cmos {
            index: 0,
            nvram,
            clock,
        }
    }

    fn read_register(&self, reg: u8) -> u8 {
        let now = || DateTime::from_unix((self.clock)());
        match reg {
            REG_SECONDS => bcd(now().second),
            REG_MINUTES => bcd(now().minute),
            REG_HOURS => bcd(now().hour),
            REG_WEEKDAY => bcd(now().weekday),
            REG_DAY => bcd(now().day),
            REG_MONTH => bcd(now().month),
            REG_YEAR => bcd(now().year),
            REG_CENTURY => bcd(now().year / 100),
            // UIP is always clear; the rate bits are whatever the guest set.
            REG_STATUS_A => self.nvram[reg as usize] & 0x7f,
            // Reading C acknowledges interrupts; none are ever raised.
            REG_STATUS_C => 0,
            REG_STATUS_D => STATUS_D_VALUE,
            _ => self.nvram[(reg & INDEX_MASK) as usize],
        }
    }

    fn write_register(&mut self, reg: u8, value: u8) {
        match reg {
            // The clock follows the host: writes to the time registers are dropped.
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "cmos: ignored write to clock register {reg:#x}"
            ),
            REG_STATUS_C | REG_STATUS_D => {}
            _ => self.nvram[(reg & INDEX_MASK) as usize] = value,
        }
    }
}

impl MutDevicePio for Cmos {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        if data.len() != 1 {
            data.fill(0xff);
            return;
        }
        data[0] = match offset {
            0 => self.index,
            1 => self.read_register(self.index),
            _ => 0xff,
        };
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        match offset {
            0 => self.index = data[0] & INDEX_MASK,
            1 => self.write_register(self.index, data[0]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &mut Cmos, reg: u8) -> u8 {
        c.pio_write(PioAddress(CMOS_PORT_BASE), 0, &[reg | 0x80]);
        let mut d = [0u8];
        c.pio_read(PioAddress(CMOS_PORT_BASE), 1, &mut d);
        d[0]
    }

    #[test]
    fn date_conversion_matches_known_dates() {
        assert_eq!(
            DateTime::from_unix(0),
            DateTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 5
            }
        );
        // 2024-02-29T23:59:58Z, a Thursday.
        assert_eq!(
            DateTime::from_unix(1_709_251_198),
            DateTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23,
                minute: 59,
                second: 58,
                weekday: 5
            }
        );
        // 2000-03-01T12:34:56Z, a Wednesday.
        let d = DateTime::from_unix(951_914_096);
        assert_eq!((d.year, d.month, d.day, d.weekday), (2000, 3, 1, 4));
        assert_eq!((d.hour, d.minute, d.second), (12, 34, 56));
    }

    #[test]
    fn clock_registers_are_bcd() {
        let mut c = Cmos::with_clock(Box::new(|| 1_709_251_198));
        assert_eq!(read(&mut c, REG_SECONDS), 0x58);
        assert_eq!(read(&mut c, REG_MINUTES), 0x59);
        assert_eq!(read(&mut c, REG_HOURS), 0x23);
        assert_eq!(read(&mut c, REG_DAY), 0x29);
        assert_eq!(read(&mut c, REG_MONTH), 0x02);
        assert_eq!(read(&mut c, REG_YEAR), 0x24);
        assert_eq!(read(&mut c, REG_CENTURY), 0x20);
        assert_eq!(read(&mut c, REG_WEEKDAY), 0x05);
        assert_eq!(read(&mut c, REG_STATUS_A) & 0x80, 0, "UIP clear");
        assert_eq!(read(&mut c, REG_STATUS_B), STATUS_B_VALUE);
        assert_eq!(read(&mut c, REG_STATUS_D), 0x80);
    }

    #[test]
    fn nvram_keeps_writes_but_clock_ignores_them() {
        let mut c = Cmos::with_clock(Box::new(|| 0));
        c.pio_write(PioAddress(CMOS_PORT_BASE), 0, &[0x40]);
        c.pio_write(PioAddress(CMOS_PORT_BASE), 1, &[0x5a]);
        assert_eq!(read(&mut c, 0x40), 0x5a);
        c.pio_write(PioAddress(CMOS_PORT_BASE), 0, &[REG_SECONDS]);
        c.pio_write(PioAddress(CMOS_PORT_BASE), 1, &[0x33]);
        assert_eq!(read(&mut c, REG_SECONDS), 0x00);
        let mut wide = [0u8; 2];
        c.pio_read(PioAddress(CMOS_PORT_BASE), 1, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }
}
