//! PCI devices through sysfs (`/sys/bus/pci/devices/<BDF>/`): ids, class, BARs (`resource`),
//! config space (`config`), driver unbinding and BAR mappings (`resourceN`).
//!
//! Mapping a BAR through `resourceN` needs root and, with `CONFIG_IO_STRICT_DEVMEM=y` (the Debian
//! kernel), a BAR no driver has claimed: unbind the driver first (see [`PciDevice::unbind`]).
//! Devices no Linux driver binds (ivshmem-plain, QEMU's edu) can be mapped as they are.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::mapping::Mapping;

/// sysfs root of the PCI devices.
pub const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// `IORESOURCE_IO` in a `resource` line's flags.
pub const IORESOURCE_IO: u64 = 0x100;
/// `IORESOURCE_MEM`.
pub const IORESOURCE_MEM: u64 = 0x200;
/// `IORESOURCE_PREFETCH`.
pub const IORESOURCE_PREFETCH: u64 = 0x2000;
/// `IORESOURCE_MEM_64`.
pub const IORESOURCE_MEM_64: u64 = 0x0010_0000;

/// PCI command register offset and bits.
pub const PCI_COMMAND: u64 = 0x04;
/// I/O space enable.
pub const PCI_COMMAND_IO: u16 = 0x1;
/// Memory space enable.
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
/// Bus master enable.
pub const PCI_COMMAND_MASTER: u16 = 0x4;
/// INTx disable.
pub const PCI_COMMAND_INTX_DISABLE: u16 = 0x400;

/// One BAR as sysfs `resource` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarInfo {
    /// BAR number 0..=5.
    pub index: usize,
    /// First address (guest-physical for memory BARs).
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
    /// `IORESOURCE_*` flags.
    pub flags: u64,
}

impl BarInfo {
    /// Size in bytes (0 for an unused BAR).
    pub fn size(&self) -> u64 {
        if (self.start == 0 && self.end == 0) || self.end < self.start {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// A memory BAR.
    pub fn is_mem(&self) -> bool {
        self.flags & IORESOURCE_MEM != 0
    }

    /// An I/O port BAR.
    pub fn is_io(&self) -> bool {
        self.flags & IORESOURCE_IO != 0
    }

    /// lspci-like kind: `mem64,prefetch`, `mem32`, `io`.
    pub fn kind(&self) -> String {
        if self.flags & IORESOURCE_IO != 0 {
            return "io".to_string();
        }
        let mut k = if self.flags & IORESOURCE_MEM_64 != 0 {
            "mem64".to_string()
        } else {
            "mem32".to_string()
        };
        if self.flags & IORESOURCE_PREFETCH != 0 {
            k.push_str(",prefetch");
        }
        k
    }
}

/// Parses sysfs `resource` (one `0x<start> 0x<end> 0x<flags>` line per resource; lines 0..=5 are
/// the BARs) into the BARs that are in use.
pub fn parse_resource(text: &str) -> Result<Vec<BarInfo>> {
    let mut bars = Vec::new();
    for (index, line) in text.lines().take(6).enumerate() {
        let mut it = line.split_whitespace();
        let mut next = |what: &str| -> Result<u64> {
            let s = it.next().ok_or_else(|| {
                Error::parse("sysfs resource", format!("line {index}: no {what}"))
            })?;
            parse_hex_u64(s)
        };
        let start = next("start")?;
        let end = next("end")?;
        let flags = next("flags")?;
        let bar = BarInfo {
            index,
            start,
            end,
            flags,
        };
        if flags != 0 && bar.size() != 0 {
            bars.push(bar);
        }
    }
    Ok(bars)
}

/// Parses `0x1af4`-style (or bare) hex.
pub fn parse_hex_u64(s: &str) -> Result<u64> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(t, 16).map_err(|e| Error::parse("hex number", format!("{s:?}: {e}")))
}

/// Parses a `VENDOR:DEVICE` pair such as `1af4:1110`.
pub fn parse_id_pair(s: &str) -> Result<(u16, u16)> {
    let (v, d) = s
        .split_once(':')
        .ok_or_else(|| Error::parse("vendor:device", format!("{s:?} has no ':'")))?;
    let v =
        u16::try_from(parse_hex_u64(v)?).map_err(|e| Error::parse("vendor id", e.to_string()))?;
    let d =
        u16::try_from(parse_hex_u64(d)?).map_err(|e| Error::parse("device id", e.to_string()))?;
    Ok((v, d))
}

/// A PCI device in sysfs.
#[derive(Debug, Clone)]
pub struct PciDevice {
    /// `0000:00:03.0`.
    pub bdf: String,
    /// `/sys/bus/pci/devices/<bdf>`.
    pub path: PathBuf,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// 24-bit class code.
    pub class: u32,
}

fn read_hex_file(p: &Path) -> Result<u64> {
    let s = fs::read_to_string(p).map_err(Error::io(format!("read {}", p.display())))?;
    parse_hex_u64(&s)
}

impl PciDevice {
    /// The device at `path` (a sysfs device directory).
    pub fn open(path: &Path) -> Result<Self> {
        let bdf = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let vendor = read_hex_file(&path.join("vendor"))? as u16;
        let device = read_hex_file(&path.join("device"))? as u16;
        let class = read_hex_file(&path.join("class"))? as u32;
        Ok(PciDevice {
            bdf,
            path: path.to_path_buf(),
            vendor,
            device,
            class,
        })
    }

    /// The first device (in BDF order) with these ids.
    pub fn find(vendor: u16, device: u16) -> Result<Self> {
        let dir = fs::read_dir(SYSFS_PCI_DEVICES)
            .map_err(Error::io(format!("read {SYSFS_PCI_DEVICES}")))?;
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if let Ok(d) = PciDevice::open(&p) {
                if d.vendor == vendor && d.device == device {
                    return Ok(d);
                }
            }
        }
        Err(Error::NoDevice { vendor, device })
    }

    /// The BARs in use.
    pub fn bars(&self) -> Result<Vec<BarInfo>> {
        let p = self.path.join("resource");
        let text = fs::read_to_string(&p).map_err(Error::io(format!("read {}", p.display())))?;
        parse_resource(&text)
    }

    /// BAR `index`, if in use.
    pub fn bar(&self, index: usize) -> Result<BarInfo> {
        self.bars()?
            .into_iter()
            .find(|b| b.index == index)
            .ok_or_else(|| Error::Unsupported(format!("{}: BAR{index} is not in use", self.bdf)))
    }

    /// Name of the bound driver, if any.
    pub fn driver(&self) -> Option<String> {
        fs::read_link(self.path.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Unbinds the bound driver (no-op without one). Returns the driver's name.
    pub fn unbind(&self) -> Result<Option<String>> {
        let Some(drv) = self.driver() else {
            return Ok(None);
        };
        let p = self.path.join("driver/unbind");
        fs::write(&p, &self.bdf).map_err(Error::io(format!(
            "write {} to {}",
            self.bdf,
            p.display()
        )))?;
        if self.driver().is_some() {
            return Err(Error::Unsupported(format!(
                "{}: still bound to {drv} after unbind",
                self.bdf
            )));
        }
        Ok(Some(drv))
    }

    /// One lspci-like summary line (`BDF class vendor:device BARs`).
    pub fn lspci_line(&self) -> Result<String> {
        let mut s = format!(
            "{} [{:06x}] {:04x}:{:04x} driver={}",
            self.bdf,
            self.class,
            self.vendor,
            self.device,
            self.driver().unwrap_or_else(|| "none".into())
        );
        for b in self.bars()? {
            s.push_str(&format!(
                " BAR{}={:#x}+{:#x}({},flags={:#x})",
                b.index,
                b.start,
                b.size(),
                b.kind(),
                b.flags
            ));
        }
        Ok(s)
    }

    fn config_file(&self, write: bool) -> Result<File> {
        let p = self.path.join("config");
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(&p)
            .map_err(Error::io(format!("open {}", p.display())))
    }

    /// The config space as sysfs shows it (256 or 4096 bytes for root).
    pub fn read_config(&self) -> Result<Vec<u8>> {
        let p = self.path.join("config");
        fs::read(&p).map_err(Error::io(format!("read {}", p.display())))
    }

    /// Reads a 16-bit config register.
    pub fn config_read_u16(&self, off: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.config_file(false)?
            .read_exact_at(&mut b, off)
            .map_err(Error::io(format!("{}: read config {off:#x}", self.bdf)))?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a 16-bit config register.
    pub fn config_write_u16(&self, off: u64, v: u16) -> Result<()> {
        self.config_file(true)?
            .write_all_at(&v.to_le_bytes(), off)
            .map_err(Error::io(format!("{}: write config {off:#x}", self.bdf)))
    }

    /// Sets `set` and clears `clear` in the command register; returns (old, new). Fails if a bit
    /// of `must` (a subset of `set`) does not read back as set (a VMM may ignore other bits).
    pub fn update_command(&self, set: u16, clear: u16, must: u16) -> Result<(u16, u16)> {
        let old = self.config_read_u16(PCI_COMMAND)?;
        let want = (old | set) & !clear;
        if want != old {
            self.config_write_u16(PCI_COMMAND, want)?;
        }
        let new = self.config_read_u16(PCI_COMMAND)?;
        if new & must != must {
            return Err(Error::Unsupported(format!(
                "{}: command register is {new:#06x} after writing {want:#06x}",
                self.bdf
            )));
        }
        Ok((old, new))
    }

    /// Maps BAR `index` through `resource<index>` (O_RDWR|O_SYNC, MAP_SHARED).
    pub fn map_bar(&self, index: usize) -> Result<MmioRegion> {
        let bar = self.bar(index)?;
        if !bar.is_mem() {
            return Err(Error::Unsupported(format!(
                "{}: BAR{index} is not a memory BAR",
                self.bdf
            )));
        }
        let p = self.path.join(format!("resource{index}"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_SYNC)
            .open(&p)
            .map_err(Error::io(format!("open {}", p.display())))?;
        let len =
            usize::try_from(bar.size()).map_err(|e| Error::parse("BAR size", e.to_string()))?;
        MmioRegion::map(&f, len, &p.display().to_string())
    }
}

/// A shared mapping of device memory (a BAR through sysfs `resourceN`). Derefs to
/// [`Mapping`] for the bounds-checked volatile accessors.
#[derive(Debug)]
pub struct MmioRegion {
    map: Mapping,
}

impl MmioRegion {
    /// Maps `len` bytes of `f` from offset 0, read-write, shared.
    pub fn map(f: &File, len: usize, what: &str) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let map = Mapping::new(len, libc::MAP_SHARED, f.as_raw_fd(), what)?;
        Ok(MmioRegion { map })
    }
}

impl std::ops::Deref for MmioRegion {
    type Target = Mapping;
    fn deref(&self) -> &Mapping {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IVSHMEM_RESOURCE: &str = "\
0x00000000febf1000 0x00000000febf10ff 0x0000000000040200
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000800000000 0x0000000800ffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
";

    #[test]
    fn resource_lines_give_the_used_bars_with_sizes_and_kinds() {
        let bars = parse_resource(IVSHMEM_RESOURCE).unwrap();
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].index, 0);
        assert_eq!(bars[0].size(), 0x100);
        assert_eq!(bars[0].kind(), "mem32");
        assert_eq!(bars[1].index, 2);
        assert_eq!(bars[1].start, 0x8_0000_0000);
        assert_eq!(bars[1].size(), 16 << 20);
        assert_eq!(bars[1].kind(), "mem64,prefetch");
        assert!(bars[1].is_mem());
    }

    #[test]
    fn io_bars_are_told_from_memory_bars() {
        // QEMU's e1000e: BAR0 and BAR1 memory, BAR2 32 ports of I/O, BAR3 memory (MSI-X).
        let text = "\
0x00000000fea00000 0x00000000fea1ffff 0x0000000000040200
0x00000000fea20000 0x00000000fea3ffff 0x0000000000040200
0x000000000000c000 0x000000000000c01f 0x0000000000040101
0x00000000fea40000 0x00000000fea43fff 0x0000000000040200
";
        let bars = parse_resource(text).unwrap();
        assert_eq!(bars.len(), 4);
        assert!(bars[2].is_io() && !bars[2].is_mem());
        assert_eq!((bars[2].start, bars[2].size()), (0xc000, 0x20));
        assert_eq!(bars[2].kind(), "io");
        assert!(bars[0].is_mem() && !bars[0].is_io());
    }

    #[test]
    fn malformed_resource_is_an_error() {
        assert!(parse_resource("0x1 zz 0x200\n").is_err());
        assert!(parse_resource("0x1\n").is_err());
    }

    #[test]
    fn id_pairs_parse_with_and_without_prefix() {
        assert_eq!(parse_id_pair("1af4:1110").unwrap(), (0x1af4, 0x1110));
        assert_eq!(parse_id_pair("0x1234:0x11e8").unwrap(), (0x1234, 0x11e8));
        assert!(parse_id_pair("1af4").is_err());
        assert!(parse_id_pair("12345:1").is_err());
    }
}
