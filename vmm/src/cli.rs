//! Command line of the `vmm` binary.
//!
//! All validation happens while clap parses, so every bad input is reported by clap as an error
//! naming the flag, with exit code 2 (clap's usage-error code).

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Parser;
pub use virtio_gpu_display::DisplayConfig;

use crate::vcpu::EXIT_CODES;

/// Smallest guest RAM accepted.
pub const MIN_MEMORY: u64 = 64 << 20;
/// Largest guest RAM accepted (must stay well below the guest's physical address width).
pub const MAX_MEMORY: u64 = 256 << 30;
/// Most vCPUs accepted (APIC ids must stay below the IOAPIC id and 0xff).
pub const MAX_VCPUS: u8 = 64;
/// Largest display width or height accepted for `gpu=blob`.
pub const MAX_DISPLAY_DIMENSION: u32 = 16384;
/// Kernel command line used when `--cmdline` is not given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// Boots an x86_64 Linux kernel on KVM.
#[derive(Parser, Debug, Clone)]
#[command(name = "vmm", version, about, long_about = None, after_help = help_epilogue())]
pub struct Args {
    /// Kernel image: a bzImage (e.g. Debian's vmlinuz) or an ELF vmlinux.
    #[arg(long, value_name = "PATH", value_parser = parse_readable_file)]
    pub kernel: PathBuf,

    /// Initramfs (e.g. a gzip-compressed cpio archive) handed to the kernel.
    #[arg(long, value_name = "PATH", value_parser = parse_readable_file)]
    pub initramfs: Option<PathBuf>,

    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,

    /// Who decompresses a bzImage's kernel and the initramfs's compressed archives: `host` (the
    /// VMM, for zstd and gzip; it places the kernel at random as the kernel's own decompressor
    /// would, unless the command line says `nokaslr`, and gives the guest the initramfs's
    /// archives uncompressed when that is at most a quarter of guest RAM and 1 GiB; other formats
    /// fall back to the guest) or `guest`.
    #[arg(long, value_name = "host|guest", default_value = "host")]
    pub decompress: crate::boot::Decompressor,

    /// Where the VMM keeps kernels and initramfs images it unpacked, to boot them again without
    /// decompressing: a directory (created with mode 0700; at most 4 entries are kept, about
    /// 60 MiB for a distribution kernel) or `off`. Default: $XDG_CACHE_HOME/vmm/kernels, else
    /// ~/.cache/vmm/kernels.
    #[arg(long, value_name = "DIR|off", value_parser = parse_kernel_cache)]
    pub kernel_cache: Option<KernelCacheArg>,

    /// How the guest reaches PCI configuration space: `ecam` (the memory-mapped PCI Express
    /// window at 0xfe000000, announced in the ACPI MCFG table; one exit per access) or `io` (the
    /// legacy ports 0xCF8/0xCFC; two exits per access, for guests without ACPI or MMCONFIG).
    #[arg(long, value_name = "ecam|io", default_value = "ecam")]
    pub pci_config: crate::vm::PciConfigAccess,

    /// Guest RAM size: a number with an optional K, M, G suffix (binary units), e.g. 512M or 2G.
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_memory)]
    pub memory: MemorySize,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=MAX_VCPUS as i64))]
    pub vcpus: u8,

    /// A device, as a key=value list: `vfio=<sysfs path or BDF>`, `gpu=blob[,width=W,height=H]`,
    /// or both (`vfio=<dev>,gpu=blob`). May be repeated.
    #[arg(long = "device", value_name = "KEY=VALUE,...", value_parser = parse_device)]
    pub devices: Vec<DeviceSpec>,

    /// Where the virtio-gpu's scanouts go: `headless` (nowhere), `capture=<dir>[,keep=N]` (a PNG
    /// per flushed frame in <dir>, at most 10 per second; only the newest N files are kept,
    /// default 100) or `vnc=<listen>[,password-file=<path>][,input=on|off]` (a VNC server on
    /// HOST:PORT, [IPv6]:PORT or unix:<path>; without password-file only loopback addresses and
    /// unix sockets; input=on, the default, adds a virtio-input keyboard and tablet fed by the
    /// clients) or `wayland[=<socket>]` (a window per scanout on a Wayland compositor, default
    /// $WAYLAND_DISPLAY in $XDG_RUNTIME_DIR; dma-bufs handed over when the compositor imports
    /// them). May be repeated: every display sees every frame.
    // The text above is the option's help as users see it, not markdown.
    #[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "headless|capture=<dir>[,keep=N]|vnc=<listen>[,...]|wayland[=<socket>]",
          default_value = "headless", value_parser = DisplayConfig::parse)]
    pub display: Vec<DisplayConfig>,

    /// Seconds the guest has to power off after SIGTERM (or SIGINT when stdin is not a terminal)
    /// pressed its ACPI power button; then the VMM stops it (exit status 5). A second signal
    /// stops it at once.
    #[arg(long, value_name = "SECS", default_value_t = crate::signals::DEFAULT_SHUTDOWN_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=MAX_SHUTDOWN_TIMEOUT))]
    pub shutdown_timeout: u64,
}

/// Longest `--shutdown-timeout` accepted (one day).
pub const MAX_SHUTDOWN_TIMEOUT: u64 = 86_400;

/// The text `--help` shows after the flags: examples, the exit status table
/// ([`EXIT_CODES`]) and how to choose log levels.
pub fn help_epilogue() -> String {
    let mut t = String::from(
        "Examples:
  Boot a kernel with an initramfs (the guest console is stdin/stdout):
    vmm --kernel /boot/vmlinuz-$(uname -r) --initramfs initramfs.cpio.gz \\
        --cmdline \"console=ttyS0 reboot=k panic=1\" --memory 1G --vcpus 2
  Pass a host PCI device (bound to vfio-pci) through, with a virtio-gpu whose blobs may lie in
  its BARs, and save the displayed frames as PNGs:
    vmm --kernel vmlinuz --initramfs initramfs.cpio.gz \\
        --device vfio=0000:01:00.0,gpu=blob --display capture=/tmp/frames
  Watch and control the guest's screen with a VNC client (e.g. `vncviewer 127.0.0.1::5900`;
  from another machine through an SSH tunnel: ssh -L 5900:127.0.0.1:5900 host):
    vmm --kernel vmlinuz --initramfs initramfs.cpio.gz \\
        --device gpu=blob --display vnc=127.0.0.1:5900

Shutdown: the guest's `poweroff` ends the VMM (ACPI S5, status 0). SIGTERM presses the guest's ACPI
power button (Linux: the `button` driver, then e.g. acpid or systemd-logind powers off); after
--shutdown-timeout seconds, or on a second SIGTERM, the VMM stops the VM (status 5). SIGINT does
the same when stdin is not a terminal. Every way out stops the vCPUs, lets the displays write their
last frame and prints the summary line.

Console: the guest's COM1 (console=ttyS0) on stdin/stdout. When stdin is a terminal it is in raw
mode while the VM runs, so every key (Ctrl-C too) goes to the guest; type Ctrl-A x to quit the VMM
(exit status 0), Ctrl-A Ctrl-A to send one Ctrl-A.

Exit status:
",
    );
    for (code, meaning) in EXIT_CODES {
        t.push_str(&format!("  {code}  {meaning}\n"));
    }
    t.push_str(
        "  A guest kernel panic reaches the VMM through its pvpanic PCI device (Linux driver
  pvpanic-pci); `reboot -f` ends the VM (reboot=k: status 0, reboot=t: status 4).

Logging (stderr), set with RUST_LOG (env_logger syntax, comma-separated):
  (unset)                        warnings, plus info lines of what the devices do
  RUST_LOG=info                  all info lines
  RUST_LOG=debug                 everything, including guest-triggered details
  RUST_LOG=virtio_gpu_blob=debug the virtio-gpu's requests in detail
  RUST_LOG=warn,devices::vfio=debug  passthrough devices in detail, warnings elsewhere",
    );
    t
}

/// A guest RAM size in bytes, page-aligned and within [`MIN_MEMORY`]..=[`MAX_MEMORY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySize(pub u64);

impl MemorySize {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Parses a memory size such as `512M`, `2G`, `65536K` or `1073741824`.
pub fn parse_memory(s: &str) -> Result<MemorySize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "'{s}' is not a size: expected a number with an optional K, M or G suffix, e.g. 512M"
        ));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => {
            return Err(format!(
                "unknown size suffix '{suffix}' in '{s}': use K, M or G (binary units), e.g. 512M"
            ))
        }
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is too large"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes % 4096 != 0 {
        return Err(format!("'{s}' is not a multiple of 4 KiB"));
    }
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&bytes) {
        return Err(format!(
            "'{s}' is out of range: guest RAM must be between {} MiB and {} GiB",
            MIN_MEMORY >> 20,
            MAX_MEMORY >> 30
        ));
    }
    Ok(MemorySize(bytes))
}

/// Accepts a path only if it names a regular file this process can open for reading.
/// `--kernel-cache`: a directory, or `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelCacheArg {
    /// No cache.
    Off,
    /// This directory (created if missing).
    Dir(PathBuf),
}

/// Parses `--kernel-cache`: `off`, or a path that is a directory or does not exist yet.
pub fn parse_kernel_cache(s: &str) -> Result<KernelCacheArg, String> {
    if s == "off" {
        return Ok(KernelCacheArg::Off);
    }
    if s.is_empty() {
        return Err("wants a directory or `off`".into());
    }
    let path = PathBuf::from(s);
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_dir() => Err(format!("'{}' is not a directory", path.display())),
        _ => Ok(KernelCacheArg::Dir(path)),
    }
}

pub fn parse_readable_file(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    check_readable_file(&path)?;
    Ok(path)
}

fn check_readable_file(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("'{}' is not a regular file", path.display()));
    }
    if meta.len() == 0 {
        return Err(format!("'{}' is empty", path.display()));
    }
    Ok(())
}

/// A PCI address `domain:bus:device.function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciBdf {
    /// PCI segment.
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number (0..=31).
    pub device: u8,
    /// Function number (0..=7).
    pub function: u8,
}

impl fmt::Display for PciBdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciBdf {
    type Err = String;

    /// Parses `[dddd:]bb:dd.f` (hexadecimal, as `lspci` prints it).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("'{s}' is not a PCI address: expected [dddd:]bb:dd.f, e.g. 0000:00:03.0");
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [b, d] => ("0", *b, *d),
            [dom, b, d] => (*dom, *b, *d),
            _ => return Err(bad()),
        };
        let hex = |v: &str, max_len: usize| -> Result<u32, String> {
            if v.is_empty() || v.len() > max_len || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(v, 16).map_err(|_| bad())
        };
        let domain = hex(domain, 4)?;
        let bus = hex(bus, 2)?;
        let device = hex(device, 2)?;
        let function = hex(function, 1)?;
        if device > 31 || function > 7 {
            return Err(bad());
        }
        Ok(PciBdf {
            domain: domain as u16,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

/// The host PCI device named by `vfio=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VfioHost {
    /// A PCI address, resolved under /sys/bus/pci/devices/.
    Bdf(PciBdf),
    /// A sysfs device directory given as an absolute path.
    SysfsPath(PathBuf),
}

impl VfioHost {
    /// The sysfs directory of the device.
    pub fn sysfs_path(&self) -> PathBuf {
        match self {
            VfioHost::Bdf(bdf) => PathBuf::from(format!("/sys/bus/pci/devices/{bdf}")),
            VfioHost::SysfsPath(p) => p.clone(),
        }
    }
}

/// Memory model of a virtio-gpu device. Only blob resources are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMode {
    /// `gpu=blob`: 2D plus `VIRTIO_GPU_F_RESOURCE_BLOB`.
    Blob,
}

/// `gpu=` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSpec {
    /// Resource model.
    pub mode: GpuMode,
    /// Display width in pixels, if given.
    pub width: Option<u32>,
    /// Display height in pixels, if given.
    pub height: Option<u32>,
}

/// One `--device` argument, typed. At least one of `vfio` and `gpu` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// A passed-through host PCI device.
    pub vfio: Option<VfioHost>,
    /// A virtio-gpu device (over guest RAM, or exporting blobs from the `vfio` device's BARs).
    pub gpu: Option<GpuSpec>,
}

/// Keys `--device` understands.
pub const DEVICE_KEYS: &[&str] = &["vfio", "gpu", "width", "height"];

/// Parses a `--device` value such as `vfio=0000:00:03.0` or `gpu=blob,width=1280,height=800`.
pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    if s.trim().is_empty() {
        return Err(
            "empty device: expected key=value,... with keys vfio, gpu, width, height".into(),
        );
    }
    let mut vfio = None;
    let mut gpu_mode = None;
    let mut width = None;
    let mut height = None;
    let mut seen: Vec<&str> = Vec::new();
    for item in s.split(',') {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not key=value (in '{s}')"))?;
        if !DEVICE_KEYS.contains(&key) {
            return Err(format!(
                "unknown key '{key}' (known keys: {})",
                DEVICE_KEYS.join(", ")
            ));
        }
        if seen.contains(&key) {
            return Err(format!("key '{key}' given twice"));
        }
        seen.push(key);
        if value.is_empty() {
            return Err(format!("key '{key}' has an empty value"));
        }
        match key {
            "vfio" => vfio = Some(parse_vfio_host(value)?),
            "gpu" => {
                gpu_mode = Some(match value {
                    "blob" => GpuMode::Blob,
                    _ => return Err(format!("gpu='{value}' is not supported (known: gpu=blob)")),
                })
            }
            "width" => width = Some(parse_dimension(key, value)?),
            "height" => height = Some(parse_dimension(key, value)?),
            _ => unreachable!("key checked against DEVICE_KEYS"),
        }
    }
    let gpu = match gpu_mode {
        Some(mode) => Some(GpuSpec {
            mode,
            width,
            height,
        }),
        None if width.is_some() || height.is_some() => {
            return Err("width/height apply to a gpu device: add gpu=blob".into())
        }
        None => None,
    };
    if vfio.is_none() && gpu.is_none() {
        return Err("a device needs vfio=... or gpu=blob".into());
    }
    Ok(DeviceSpec { vfio, gpu })
}

fn parse_vfio_host(value: &str) -> Result<VfioHost, String> {
    if value.starts_with('/') {
        Ok(VfioHost::SysfsPath(PathBuf::from(value)))
    } else {
        value
            .parse::<PciBdf>()
            .map(VfioHost::Bdf)
            .map_err(|e| format!("vfio: {e}, or an absolute sysfs path"))
    }
}

fn parse_dimension(key: &str, value: &str) -> Result<u32, String> {
    let v: u32 = value
        .parse()
        .map_err(|_| format!("{key}='{value}' is not a number"))?;
    if v == 0 || v > MAX_DISPLAY_DIMENSION {
        return Err(format!(
            "{key}={v} is out of range (1..={MAX_DISPLAY_DIMENSION})"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512M").unwrap().bytes(), 512 << 20);
        assert_eq!(parse_memory("2G").unwrap().bytes(), 2 << 30);
        assert_eq!(parse_memory("2g").unwrap().bytes(), 2 << 30);
        assert_eq!(parse_memory("131072K").unwrap().bytes(), 128 << 20);
        assert_eq!(parse_memory("1GiB").unwrap().bytes(), 1 << 30);
        assert_eq!(parse_memory("268435456").unwrap().bytes(), 256 << 20);
    }

    #[test]
    fn bad_memory_sizes() {
        let e = parse_memory("12X").unwrap_err();
        assert!(e.contains("unknown size suffix 'X'"), "{e}");
        assert!(parse_memory("M").unwrap_err().contains("not a size"));
        assert!(parse_memory("").is_err());
        assert!(parse_memory("-1G").is_err());
        assert!(parse_memory("1.5G").is_err());
        assert!(parse_memory("99999999999999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_memory("17179869184G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_memory("1M").unwrap_err().contains("out of range"));
        assert!(parse_memory("1T").is_err());
        assert!(parse_memory("100001").unwrap_err().contains("4 KiB"));
    }

    #[test]
    fn bdf_parsing() {
        let b: PciBdf = "0000:00:03.0".parse().unwrap();
        assert_eq!(
            b,
            PciBdf {
                domain: 0,
                bus: 0,
                device: 3,
                function: 0
            }
        );
        let b: PciBdf = "1f:1f.7".parse().unwrap();
        assert_eq!((b.domain, b.bus, b.device, b.function), (0, 0x1f, 0x1f, 7));
        assert_eq!(b.to_string(), "0000:1f:1f.7");
        for bad in [
            "00:20.0",
            "00:03.8",
            "00:03",
            "x:00:03.0",
            "0:0:0:0.0",
            "000:03.0",
            ":.0",
        ] {
            assert!(bad.parse::<PciBdf>().is_err(), "{bad}");
        }
    }

    #[test]
    fn device_specs() {
        let d = parse_device("vfio=0000:00:03.0").unwrap();
        assert_eq!(d.vfio, Some(VfioHost::Bdf("0000:00:03.0".parse().unwrap())));
        assert_eq!(d.gpu, None);
        assert_eq!(
            d.vfio.unwrap().sysfs_path(),
            PathBuf::from("/sys/bus/pci/devices/0000:00:03.0")
        );

        let d = parse_device("vfio=/sys/bus/pci/devices/0000:00:04.0").unwrap();
        assert_eq!(
            d.vfio,
            Some(VfioHost::SysfsPath(
                "/sys/bus/pci/devices/0000:00:04.0".into()
            ))
        );

        let d = parse_device("gpu=blob,width=1280,height=800").unwrap();
        assert_eq!(
            d.gpu,
            Some(GpuSpec {
                mode: GpuMode::Blob,
                width: Some(1280),
                height: Some(800)
            })
        );
        assert_eq!(d.vfio, None);

        let d = parse_device("vfio=00:03.0,gpu=blob").unwrap();
        assert!(d.vfio.is_some() && d.gpu.is_some());
    }

    #[test]
    fn bad_device_specs() {
        let cases = [
            ("foo=bar", "unknown key 'foo'"),
            ("gpu=blob,depth=3", "unknown key 'depth'"),
            ("gpu=3d", "not supported"),
            ("gpu=blob,width=0", "out of range"),
            ("gpu=blob,width=99999", "out of range"),
            ("gpu=blob,height=abc", "not a number"),
            ("width=100", "add gpu=blob"),
            ("vfio=zz:00.0", "not a PCI address"),
            ("vfio=", "empty value"),
            ("vfio", "not key=value"),
            ("gpu=blob,gpu=blob", "given twice"),
            ("", "empty device"),
            ("gpu=blob,", "not key=value"),
        ];
        for (input, expected) in cases {
            let e = parse_device(input).unwrap_err();
            assert!(e.contains(expected), "{input:?}: {e}");
        }
    }

    fn kernel_file() -> (tempdir::TempDir, String) {
        let dir = tempdir::TempDir::new();
        let path = dir.path().join("vmlinuz");
        std::fs::write(&path, b"not really a kernel").unwrap();
        let s = path.to_str().unwrap().to_string();
        (dir, s)
    }

    #[test]
    fn full_command_line() {
        let (_dir, k) = kernel_file();
        let a = Args::try_parse_from([
            "vmm",
            "--kernel",
            &k,
            "--initramfs",
            &k,
            "--memory",
            "1G",
            "--vcpus",
            "2",
            "--cmdline",
            "console=ttyS0 quiet",
            "--device",
            "gpu=blob",
            "--device",
            "vfio=00:03.0",
        ])
        .unwrap();
        assert_eq!(a.memory.bytes(), 1 << 30);
        assert_eq!(a.vcpus, 2);
        assert_eq!(a.cmdline, "console=ttyS0 quiet");
        assert_eq!(a.devices.len(), 2);
        assert_eq!(a.display, [DisplayConfig::Headless]);
        let cap = format!("capture={}", std::env::temp_dir().display());
        let a = Args::try_parse_from(["vmm", "--kernel", &k, "--display", &cap]).unwrap();
        assert_eq!(
            a.display,
            [DisplayConfig::parse(&cap).unwrap()],
            "capture=<dir>"
        );
        // Repeated: every display, in order.
        let a = Args::try_parse_from([
            "vmm",
            "--kernel",
            &k,
            "--display",
            &cap,
            "--display",
            "vnc=127.0.0.1:5900",
        ])
        .unwrap();
        assert_eq!(a.display.len(), 2);
        assert!(a.display[1].wants_input());
        let a = Args::try_parse_from(["vmm", "--kernel", &k]).unwrap();
        assert_eq!(a.memory.bytes(), 512 << 20);
        assert_eq!(a.vcpus, 1);
        assert_eq!(a.cmdline, DEFAULT_CMDLINE);
        assert!(a.initramfs.is_none() && a.devices.is_empty());
        assert_eq!(a.decompress, crate::boot::Decompressor::Host);
        assert_eq!(a.kernel_cache, None);
        assert_eq!(a.pci_config, crate::vm::PciConfigAccess::Ecam);
        let a = Args::try_parse_from([
            "vmm",
            "--kernel",
            &k,
            "--decompress",
            "guest",
            "--kernel-cache",
            "off",
            "--pci-config",
            "io",
        ])
        .unwrap();
        assert_eq!(a.pci_config, crate::vm::PciConfigAccess::Io);
        assert_eq!(a.decompress, crate::boot::Decompressor::Guest);
        assert_eq!(a.kernel_cache, Some(KernelCacheArg::Off));
        let a = Args::try_parse_from(["vmm", "--kernel", &k, "--kernel-cache", "/nonexistent/kc"])
            .unwrap();
        assert_eq!(
            a.kernel_cache,
            Some(KernelCacheArg::Dir(PathBuf::from("/nonexistent/kc")))
        );
    }

    #[test]
    fn command_line_errors_name_the_flag_and_are_usage_errors() {
        let (_dir, k) = kernel_file();
        let cases: [(&[&str], &str); 13] = [
            (&["--kernel", "/nonexistent/vmlinuz"], "--kernel"),
            (&["--kernel", &k, "--display", "sdl"], "--display"),
            (&["--kernel", &k, "--display", "capture="], "--display"),
            (
                &["--kernel", &k, "--display", "vnc=0.0.0.0:5900"],
                "loopback",
            ),
            (
                &["--kernel", &k, "--initramfs", "/nonexistent"],
                "--initramfs",
            ),
            (&["--kernel", &k, "--memory", "12X"], "--memory"),
            (&["--kernel", &k, "--device", "bogus=1"], "--device"),
            (&["--kernel", &k, "--vcpus", "0"], "--vcpus"),
            (&["--kernel", &k, "--kernel-cache", &k], "--kernel-cache"),
            (&["--kernel", &k, "--kernel-cache", ""], "--kernel-cache"),
            (&["--kernel", &k, "--decompress", "cpu"], "--decompress"),
            (&["--kernel", &k, "--pci-config", "cf8"], "--pci-config"),
            (&["--kernel", "/"], "--kernel"),
        ];
        for (args, flag) in cases {
            let argv: Vec<&str> = std::iter::once("vmm").chain(args.iter().copied()).collect();
            let err = Args::try_parse_from(&argv).unwrap_err();
            // A value outside a fixed set (--decompress) is clap's InvalidValue.
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::ValueValidation | ErrorKind::InvalidValue
                ),
                "{argv:?}: {:?}",
                err.kind()
            );
            assert_eq!(err.exit_code(), 2);
            let msg = err.to_string();
            assert!(msg.contains(flag), "{argv:?}: {msg}");
        }
        let err = Args::try_parse_from(["vmm"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn help_lists_every_exit_code_examples_and_log_levels() {
        use clap::CommandFactory;
        let help = Args::command().render_help().to_string();
        assert!(help.contains("Exit status:"), "{help}");
        for (code, meaning) in EXIT_CODES {
            assert!(
                help.contains(&format!("  {code}  {meaning}")),
                "{code}: {help}"
            );
        }
        for code in 0..=4 {
            assert!(
                EXIT_CODES.iter().any(|(c, _)| *c == code),
                "exit status {code} is not in the table"
            );
        }
        for text in [
            "vmm --kernel /boot/vmlinuz",
            "--device vfio=0000:01:00.0,gpu=blob --display capture=/tmp/frames",
            "RUST_LOG=info",
            "RUST_LOG=virtio_gpu_blob=debug",
            "Ctrl-A x",
        ] {
            assert!(help.contains(text), "{text}: {help}");
        }
    }

    /// A directory removed on drop (no extra crate needed for tests).
    mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct TempDir(PathBuf);

        impl TempDir {
            pub fn new() -> Self {
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "vmm-cli-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
