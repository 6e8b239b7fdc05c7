//! Loads the kernel (bzImage or ELF vmlinux), the command line and the initramfs, and writes
//! the Linux boot_params (zero page) with the e820 map.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header, E820_MAX_ENTRIES_ZEROPAGE};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{
    e820_entries, low_ram_end, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, ZERO_PAGE_START,
};

/// "HdrS": the setup header magic.
const HDRS_MAGIC: u32 = 0x5372_6448;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// type_of_loader "undefined" (no registered boot loader id).
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// xloadflags: the kernel has a 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1;
/// Boot protocol 2.12 introduced xloadflags.
const BOOT_PROTOCOL_XLOADFLAGS: u16 = 0x020c;
/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// initrd_addr_max of kernels that do not say (boot protocol < 2.03).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// Kernel alignment announced for ELF kernels.
const ELF_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// Command-line buffer size assumed for ELF kernels (x86's COMMAND_LINE_SIZE).
const ELF_CMDLINE_SIZE: usize = 2048;
const PAGE_SIZE: u64 = 4096;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// Errors while loading the guest's boot images.
#[derive(Debug, Error)]
pub enum LoaderError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// linux-loader rejected the kernel.
    #[error("cannot load kernel {path}: {source}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// The error.
        source: linux_loader::loader::Error,
    },
    /// The bzImage has no 64-bit entry point.
    #[error(
        "kernel {0} has no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 needed)"
    )]
    No64BitEntry(PathBuf),
    /// The command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// The initramfs does not fit.
    #[error("initramfs {path} ({size} bytes) does not fit in guest RAM between the kernel end {kernel_end:#x} and {limit:#x}")]
    InitramfsTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// End of the loaded kernel.
        kernel_end: u64,
        /// Highest usable address.
        limit: u64,
    },
    /// Writing to guest memory failed.
    #[error("cannot write the {what} into guest memory: {detail}")]
    GuestMemory {
        /// What was written.
        what: &'static str,
        /// Error text.
        detail: String,
    },
}

/// Result of loading: where the vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelEntry {
    /// 64-bit entry point (RIP).
    pub entry: u64,
    /// Guest address of boot_params (RSI).
    pub boot_params: u64,
    /// End of the loaded kernel image.
    pub kernel_end: u64,
    /// Initramfs location, if any: (address, size).
    pub initramfs: Option<(u64, u64)>,
    /// Guest range the kernel writes while it boots, before its own allocator runs: (start, end).
    /// A bzImage's decompressor works up to `pref_address + init_size`; an ELF kernel stays in
    /// its image.
    pub boot_footprint: (u64, u64),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LoaderError + '_ {
    move |source| LoaderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_elf(file: &mut File) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0))?;
    let n = file.read(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(n == 4 && magic == ELF_MAGIC)
}

/// What the kernel image told us.
struct LoadedKernel {
    entry: u64,
    kernel_end: u64,
    header: setup_header,
}

fn load_kernel_image(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, LoaderError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let kerr = |source| LoaderError::Kernel {
        path: path.to_path_buf(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    if is_elf(&mut file).map_err(io_err(path))? {
        let r = Elf::load(mem, None, &mut file, himem).map_err(kerr)?;
        let header = setup_header {
            boot_flag: BOOT_FLAG_MAGIC,
            header: HDRS_MAGIC,
            kernel_alignment: ELF_KERNEL_ALIGNMENT,
            cmdline_size: ELF_CMDLINE_SIZE as u32 - 1,
            initrd_addr_max: DEFAULT_INITRD_ADDR_MAX as u32,
            ..Default::default()
        };
        Ok(LoadedKernel {
            entry: r.kernel_load.0,
            kernel_end: r.kernel_end,
            header,
        })
    } else {
        let r = BzImage::load(mem, None, &mut file, himem).map_err(kerr)?;
        let header = r.setup_header.unwrap_or_default();
        if header.version < BOOT_PROTOCOL_XLOADFLAGS || header.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LoaderError::No64BitEntry(path.to_path_buf()));
        }
        Ok(LoadedKernel {
            entry: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
            kernel_end: r.kernel_end,
            header,
        })
    }
}

/// Where an initramfs of `size` bytes goes: page-aligned, as high as possible below both
/// `initrd_addr_max` and the end of low RAM, and above `kernel_end`.
pub fn initramfs_address(
    size: u64,
    kernel_end: u64,
    initrd_addr_max: u64,
    low_ram_end: u64,
) -> Option<u64> {
    // initrd_addr_max is the highest address the initrd's last byte may occupy.
    let limit = initrd_addr_max.saturating_add(1).min(low_ram_end);
    let addr = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    let kernel_end_aligned = kernel_end.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    (addr >= kernel_end_aligned).then_some(addr)
}

/// Loads everything the kernel needs and returns where to start it.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &str,
) -> Result<KernelEntry, LoaderError> {
    let LoadedKernel {
        entry,
        kernel_end,
        header,
    } = load_kernel_image(mem, kernel)?;

    let mut params = boot_params {
        hdr: header,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HDRS_MAGIC;

    // Command line: bounded by the kernel's buffer and by the room we reserve for it.
    let kernel_cmdline_size = if params.hdr.cmdline_size == 0 {
        256
    } else {
        params.hdr.cmdline_size as usize + 1
    };
    let capacity = kernel_cmdline_size.min(CMDLINE_MAX_SIZE);
    let cl = Cmdline::try_from(cmdline, capacity)
        .map_err(|e| LoaderError::Cmdline(format!("{e} (at most {} bytes)", capacity - 1)))?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cl)
        .map_err(|e| LoaderError::Cmdline(e.to_string()))?;
    let cmdline_len = cl
        .as_cstring()
        .map_err(|e| LoaderError::Cmdline(e.to_string()))?
        .as_bytes()
        .len();
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;

    let mut initramfs_loc = None;
    if let Some(path) = initramfs {
        let mut file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        let initrd_addr_max = match params.hdr.initrd_addr_max {
            0 => DEFAULT_INITRD_ADDR_MAX,
            v => u64::from(v),
        };
        let low_end = low_ram_end(mem_size);
        let addr =
            initramfs_address(size, kernel_end, initrd_addr_max, low_end).ok_or_else(|| {
                LoaderError::InitramfsTooLarge {
                    path: path.to_path_buf(),
                    size,
                    kernel_end,
                    limit: initrd_addr_max.saturating_add(1).min(low_end),
                }
            })?;
        mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
            .map_err(|e| LoaderError::GuestMemory {
                what: "initramfs",
                detail: e.to_string(),
            })?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        initramfs_loc = Some((addr, size));
    }

    let e820 = e820_entries(mem_size);
    debug_assert!(e820.len() <= E820_MAX_ENTRIES_ZEROPAGE);
    for (slot, e) in params.e820_table.iter_mut().zip(e820.iter()) {
        *slot = *e;
    }
    params.e820_entries = e820.len() as u8;

    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| LoaderError::GuestMemory {
        what: "boot parameters",
        detail: e.to_string(),
    })?;

    let footprint_end = match (header.pref_address, header.init_size) {
        (0, _) | (_, 0) => kernel_end,
        (pref, size) => kernel_end.max(pref.saturating_add(u64::from(size))),
    };
    Ok(KernelEntry {
        entry,
        boot_params: ZERO_PAGE_START,
        kernel_end,
        initramfs: initramfs_loc,
        boot_footprint: (HIMEM_START, footprint_end.min(low_ram_end(mem_size))),
    })
}

/// Writes `bytes` at `addr` (used for the small boot structures).
pub fn write_bytes(
    mem: &GuestMemoryMmap,
    addr: u64,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), LoaderError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|e| LoaderError::GuestMemory {
            what,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::E820_RAM;
    use std::io::Write;
    use vm_memory::Bytes;

    const MEM: u64 = 64 << 20;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vmm-loader-{}-{name}", std::process::id()));
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    /// A minimal bzImage: boot sector + 1 setup sector with a protocol 2.15 header, then a
    /// "compressed kernel" payload.
    fn fake_bzimage(xloadflags: u16) -> Vec<u8> {
        let setup_sects = 1u8;
        let mut img = vec![0u8; 512 * (1 + setup_sects as usize)];
        img[0x1f1] = setup_sects;
        img[0x1fe..0x200].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
        img[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x211] = 0x01; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        img.extend_from_slice(&[0x90; 8192]);
        img
    }

    #[test]
    fn bzimage_with_initramfs_and_cmdline() {
        let m = mem();
        let k = temp_file("bz", &fake_bzimage(0x3));
        let i = temp_file("initrd", &[0xab; 10_000]);
        let r = load(&m, MEM, &k, Some(&i), "console=ttyS0 quiet").unwrap();
        assert_eq!(r.entry, HIMEM_START + 0x200);
        assert_eq!(r.kernel_end, HIMEM_START + 8192);
        let (addr, size) = r.initramfs.unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + size <= MEM && addr >= r.kernel_end);
        assert_eq!(m.read_obj::<u8>(GuestAddress(addr + 9_999)).unwrap(), 0xab);
        assert_eq!(m.read_obj::<u8>(GuestAddress(HIMEM_START)).unwrap(), 0x90);

        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let (hdr_magic, loader, ptr) = (p.hdr.header, p.hdr.type_of_loader, p.hdr.cmd_line_ptr);
        assert_eq!(
            (hdr_magic, loader, ptr),
            (HDRS_MAGIC, 0xff, CMDLINE_START as u32)
        );
        let (img, sz, cl) = (p.hdr.ramdisk_image, p.hdr.ramdisk_size, p.hdr.cmdline_size);
        assert_eq!((img as u64, sz, cl), (addr, 10_000, 19));
        let mut buf = [0u8; 20];
        m.read_slice(&mut buf, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&buf, b"console=ttyS0 quiet\0");
        let n = p.e820_entries as usize;
        assert_eq!(n, e820_entries(MEM).len());
        let ram: u64 = p.e820_table[..n]
            .iter()
            .filter(|e| e.r#type == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert!(ram > MEM - (1 << 20));
        std::fs::remove_file(k).unwrap();
        std::fs::remove_file(i).unwrap();
    }

    /// A minimal ELF64 x86_64 executable: one PT_LOAD of `payload` at physical `paddr`,
    /// entry point `entry`.
    fn fake_vmlinux(paddr: u64, entry: u64, payload: &[u8]) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHDR: usize = 56;
        let mut f = vec![0u8; EHDR + PHDR];
        f[..4].copy_from_slice(&ELF_MAGIC);
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little endian
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = &mut f[EHDR..];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R|X
        ph[8..16].copy_from_slice(&((EHDR + PHDR) as u64).to_le_bytes()); // p_offset
        ph[16..24].copy_from_slice(&(0xffff_ffff_8000_0000 + paddr).to_le_bytes()); // p_vaddr
        ph[24..32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
        ph[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes()); // p_filesz
        ph[40..48].copy_from_slice(&(payload.len() as u64).to_le_bytes()); // p_memsz
        ph[48..56].copy_from_slice(&0x20_0000u64.to_le_bytes()); // p_align
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn elf_vmlinux_enters_at_its_entry_point() {
        let m = mem();
        let k = temp_file(
            "vmlinux",
            &fake_vmlinux(0x100_0000, 0x100_0040, &[0xf4; 4096]),
        );
        let r = load(&m, MEM, &k, None, "console=ttyS0").unwrap();
        assert_eq!(r.entry, 0x100_0040);
        assert_eq!(r.kernel_end, 0x100_0000 + 4096);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x100_0fff)).unwrap(), 0xf4);
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let (flag, magic, align) = (p.hdr.boot_flag, p.hdr.header, p.hdr.kernel_alignment);
        assert_eq!(
            (flag, magic, align),
            (BOOT_FLAG_MAGIC, HDRS_MAGIC, ELF_KERNEL_ALIGNMENT)
        );
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn bzimage_without_64bit_entry_is_rejected() {
        let k = temp_file("bz32", &fake_bzimage(0));
        let e = load(&mem(), MEM, &k, None, "console=ttyS0").unwrap_err();
        assert!(matches!(e, LoaderError::No64BitEntry(_)), "{e}");
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn garbage_kernel_is_an_error() {
        let k = temp_file("junk", &[0x42; 4096]);
        let e = load(&mem(), MEM, &k, None, "").unwrap_err();
        assert!(matches!(e, LoaderError::Kernel { .. }), "{e}");
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn too_long_cmdline_is_an_error() {
        let k = temp_file("bzlong", &fake_bzimage(1));
        let long = "a".repeat(3000);
        let e = load(&mem(), MEM, &k, None, &long).unwrap_err();
        assert!(matches!(e, LoaderError::Cmdline(_)), "{e}");
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn initramfs_placement() {
        // Top of RAM when initrd_addr_max is higher.
        assert_eq!(
            initramfs_address(0x1800, 0x20_0000, 0x7fff_ffff, 0x400_0000),
            Some(0x400_0000 - 0x2000)
        );
        // Below initrd_addr_max when RAM is larger.
        assert_eq!(
            initramfs_address(0x1000, 0x20_0000, 0x37ff_ffff, 0xc000_0000),
            Some(0x3800_0000 - 0x1000)
        );
        // Would overlap the kernel.
        assert_eq!(
            initramfs_address(0x100_0000, 0x80_0000, 0x7fff_ffff, 0x100_0000),
            None
        );
        assert_eq!(initramfs_address(u64::MAX, 0, u64::MAX, 0x100_0000), None);
    }
}
