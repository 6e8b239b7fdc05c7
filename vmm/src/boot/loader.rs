//! Loads the kernel (bzImage or ELF vmlinux), the command line and the initramfs, and writes
//! the Linux boot_params (zero page) with the e820 map.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header, E820_MAX_ENTRIES_ZEROPAGE};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::bzimage_payload::{self, Compression, Payload, PayloadError};
use super::initramfs;
use super::kaslr::{self, Placement};
use super::kernel_cache::{self, EntryKind, KernelCache};
use super::vmlinux::{Layout, Unpacked, Unpacker, VmlinuxError};
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
/// loadflags: the kernel was placed at random (KASLR); the kernel then randomises its memory
/// regions too.
const KASLR_FLAG: u8 = 1 << 1;
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
/// An initramfs is unpacked on the host only up to this share of guest RAM (1/4): the guest
/// holds it and the files unpacked from it at the same time.
const UNPACKED_INITRAMFS_RAM_DIVISOR: u64 = 4;
/// And only up to this size (the VMM holds it in its own memory while it loads it).
const UNPACKED_INITRAMFS_MAX: u64 = 1 << 30;
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
    /// How the initramfs went into guest memory, if there is one.
    pub initramfs_form: Option<InitramfsForm>,
    /// Guest range the kernel writes while it boots, before its own allocator runs: (start, end).
    /// A bzImage's decompressor works up to `pref_address + init_size`; an ELF kernel stays in
    /// its image.
    pub boot_footprint: (u64, u64),
    /// How the kernel went into guest memory.
    pub form: KernelForm,
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

/// Who decompresses a bzImage's kernel and the initramfs's compressed archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Decompressor {
    /// The VMM, for the formats it knows (zstd, gzip); it then places the kernel at random
    /// like the kernel's decompressor would. Others fall back to the guest.
    #[default]
    Host,
    /// The kernel's own decompressors, in the guest.
    Guest,
}

/// How the VMM treats a bzImage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacking {
    /// Who decompresses it.
    pub decompressor: Decompressor,
    /// Where unpacked kernels and initramfs images are kept between boots (`None`: nowhere).
    pub cache: Option<PathBuf>,
}

/// How the initramfs went into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitramfsForm {
    /// As the file is: uncompressed already, or left to the kernel's decompressors.
    AsGiven,
    /// With its compressed archives decompressed by the VMM.
    Unpacked {
        /// Whether it came from the cache (no decompression).
        from_cache: bool,
    },
}

/// How the kernel image went into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelForm {
    /// An ELF vmlinux, loaded where it was linked.
    Elf,
    /// A bzImage whose payload the VMM decompressed and placed.
    Unpacked {
        /// The payload's format.
        compression: Compression,
        /// Where the kernel went.
        placement: Placement,
        /// Whether the placement was random (KASLR); not with `nokaslr` or a kernel without
        /// relocations.
        randomised: bool,
        /// Whether the unpacked kernel came from the cache (no decompression).
        from_cache: bool,
    },
    /// A bzImage the guest decompresses.
    BzImage,
}

/// What the kernel image told us.
struct LoadedKernel {
    entry: u64,
    /// Lowest guest address the loaded image occupies.
    start: u64,
    kernel_end: u64,
    header: setup_header,
    form: KernelForm,
}

/// What the kernel's placement must respect.
struct Room<'a> {
    mem: &'a GuestMemoryMmap,
    mem_size: u64,
    cmdline: &'a str,
    initramfs_size: Option<u64>,
}

fn load_kernel_image(
    room: &Room,
    path: &Path,
    unpacking: &Unpacking,
) -> Result<LoadedKernel, LoaderError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let kerr = |source| LoaderError::Kernel {
        path: path.to_path_buf(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    if is_elf(&mut file).map_err(io_err(path))? {
        let r = Elf::load(room.mem, None, &mut file, himem).map_err(kerr)?;
        let header = setup_header {
            boot_flag: BOOT_FLAG_MAGIC,
            header: HDRS_MAGIC,
            kernel_alignment: ELF_KERNEL_ALIGNMENT,
            cmdline_size: ELF_CMDLINE_SIZE as u32 - 1,
            initrd_addr_max: DEFAULT_INITRD_ADDR_MAX as u32,
            ..Default::default()
        };
        return Ok(LoadedKernel {
            entry: r.kernel_load.0,
            start: HIMEM_START,
            kernel_end: r.kernel_end,
            header,
            form: KernelForm::Elf,
        });
    }
    let mut image = Vec::new();
    file.read_to_end(&mut image).map_err(io_err(path))?;
    if unpacking.decompressor == Decompressor::Host {
        let payload = bzimage_payload::find(&image);
        // The cache (and its directory) only for a payload the VMM can unpack.
        let unpackable = payload
            .as_ref()
            .is_ok_and(|p| !matches!(p.compression, Compression::Unsupported(_)));
        let cache = unpackable
            .then(|| open_cache(unpacking))
            .flatten()
            .and_then(|c| Some((c, cache_key(&file, path, EntryKind::Kernel)?)));
        let cache = cache.as_ref().map(|(c, k)| (c, k.as_str()));
        match payload
            .map_err(UnpackError::from)
            .and_then(|p| unpack(room, &p, cache))
        {
            Ok(k) => return Ok(k),
            Err(why) => log::info!(
                "kernel {}: the guest decompresses it ({why})",
                path.display()
            ),
        }
    }
    let r = BzImage::load(room.mem, None, &mut Cursor::new(&image), himem).map_err(kerr)?;
    let header = r.setup_header.unwrap_or_default();
    if !has_64bit_entry(&header) {
        return Err(LoaderError::No64BitEntry(path.to_path_buf()));
    }
    Ok(LoadedKernel {
        entry: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
        start: HIMEM_START,
        kernel_end: r.kernel_end,
        header,
        form: KernelForm::BzImage,
    })
}

/// The cache of unpacked images, if one is configured and usable.
fn open_cache(unpacking: &Unpacking) -> Option<KernelCache> {
    let dir = unpacking.cache.as_deref()?;
    KernelCache::open(dir)
        .map_err(|e| log::info!("kernel cache {} not used: {e}", dir.display()))
        .ok()
}

/// The cache entry's name for the file `source` at `path`.
fn cache_key(source: &File, path: &Path, kind: EntryKind) -> Option<String> {
    kernel_cache::key(source, kind)
        .map_err(|e| log::debug!("kernel cache: no key for {}: {e}", path.display()))
        .ok()
}

/// Why the VMM leaves a bzImage to the guest's decompressor.
#[derive(Debug, Error)]
enum UnpackError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Vmlinux(#[from] VmlinuxError),
    #[error("no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 needed)")]
    No64BitEntry,
    #[error("no entropy for the kernel's placement: {0}")]
    Entropy(io::Error),
}

/// Decompresses a bzImage's `payload` on the host and loads the kernel proper at a random place
/// (unless `nokaslr` or the kernel has no relocations), as the kernel's decompressor would.
fn unpack(
    room: &Room,
    payload: &Payload<'_>,
    cache: Option<(&KernelCache, &str)>,
) -> Result<LoadedKernel, UnpackError> {
    let t = Instant::now();
    let mut header = payload.header;
    if !has_64bit_entry(&header) {
        return Err(UnpackError::No64BitEntry);
    }
    // As the kernel's decompressor: a random place when the kernel carries relocations (it was
    // built with KASLR) and is relocatable, unless the command line says `nokaslr`.
    let wanted = header.relocatable_kernel != 0 && !kaslr::disabled_by(room.cmdline);
    let random = if wanted {
        kaslr::host_random().map_err(UnpackError::Entropy)?
    } else {
        0
    };
    // Below where the initramfs will go (it is placed top-down, independent of the kernel).
    let low_end = low_ram_end(room.mem_size);
    let limit = room
        .initramfs_size
        .and_then(|size| initramfs_address(size, 0, initrd_addr_max(&header), low_end))
        .unwrap_or(low_end);
    // Randomised only with a relocation table to move the virtual addresses.
    let randomise = |layout: &Layout| wanted && layout.carries_relocations();
    let mut placement = None;
    let mut place = |layout: &Layout| {
        let p = if randomise(layout) {
            kaslr::place(
                random,
                layout.link_base(),
                layout.span(),
                limit,
                u64::from(header.kernel_alignment),
            )
        } else {
            Placement {
                phys: layout.link_base(),
                virt_offset: 0,
            }
        };
        placement = Some(p);
        p.phys
    };
    let len = payload.announced_len();
    let entry = cache.and_then(|(c, key)| Some(c.get(key, len..=len)?.0));
    let from_cache = entry.is_some();
    let (phys, kernel) = if let Some(mut entry) = entry {
        Unpacked::read_from(room.mem, &mut entry, payload.announced_len(), &mut place)?
    } else {
        let mut unpacker = Unpacker::new(room.mem, payload.announced_len());
        // Written to the cache as it is decompressed; a failing write only ends the caching.
        let mut writer = cache.and_then(|(c, key)| {
            c.writer(key)
                .map_err(|e| log::info!("kernel cache: cannot add {key}: {e}"))
                .ok()
        });
        payload.decompress_with(room.mem_size, |chunk| {
            if let Some(w) = writer.as_mut() {
                if let Err(e) = w.write(chunk) {
                    log::info!("kernel cache: cannot write an entry: {e}");
                    writer = None;
                }
            }
            unpacker.write(chunk, &mut place).map_err(UnpackError::from)
        })?;
        let unpacked = unpacker.finish()?;
        if let Some(w) = writer {
            if let Err(e) = w.commit() {
                log::info!("kernel cache: cannot add an entry: {e}");
            }
        }
        unpacked
    };
    let decompressed = t.elapsed();
    let placement = placement.expect("a finished unpacker has placed the kernel");
    let randomised = randomise(&kernel.layout);
    if randomised {
        kernel.relocate(room.mem, phys, placement.virt_offset)?;
        header.loadflags |= KASLR_FLAG;
    }
    log::debug!(
        "kernel: {:?} payload {} into guest RAM ({} MiB in {:.1} ms, relocated in {:.1} ms) at {:#x}, virtual offset {:#x}{}",
        payload.compression,
        if from_cache {
            "unpacked from the kernel cache"
        } else {
            "decompressed on the host"
        },
        payload.announced_len() >> 20,
        decompressed.as_secs_f64() * 1e3,
        (t.elapsed() - decompressed).as_secs_f64() * 1e3,
        placement.phys,
        placement.virt_offset,
        if randomised { " (KASLR)" } else { "" }
    );
    Ok(LoadedKernel {
        entry: phys + kernel.layout.entry_offset(),
        start: phys,
        kernel_end: phys + kernel.layout.span(),
        header,
        form: KernelForm::Unpacked {
            compression: payload.compression,
            placement,
            randomised,
            from_cache,
        },
    })
}

/// Whether the kernel has a 64-bit entry point (boot protocol 2.12+ with `XLF_KERNEL_64`).
fn has_64bit_entry(header: &setup_header) -> bool {
    header.version >= BOOT_PROTOCOL_XLOADFLAGS && header.xloadflags & XLF_KERNEL_64 != 0
}

/// The highest address the initramfs may end at, from the header (a default when it does not
/// say).
fn initrd_addr_max(header: &setup_header) -> u64 {
    match header.initrd_addr_max {
        0 => DEFAULT_INITRD_ADDR_MAX,
        v => u64::from(v),
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

/// The initramfs as it goes into guest memory.
struct Initramfs<'a> {
    path: &'a Path,
    data: InitramfsData,
    /// Bytes that go into guest memory.
    size: u64,
    form: InitramfsForm,
}

/// Where the initramfs's bytes come from.
enum InitramfsData {
    /// A file: the initramfs itself, or a cache entry.
    File(File),
    /// Bytes read or unpacked.
    Bytes(Vec<u8>),
}

impl<'a> Initramfs<'a> {
    /// The file at `path` as it is.
    fn as_given(path: &'a Path) -> Result<Self, LoaderError> {
        let (file, size) = Self::open(path)?;
        Ok(Self::given(path, InitramfsData::File(file), size))
    }

    fn open(path: &Path) -> Result<(File, u64), LoaderError> {
        let file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        Ok((file, size))
    }

    fn given(path: &'a Path, data: InitramfsData, size: u64) -> Self {
        Self {
            path,
            data,
            size,
            form: InitramfsForm::AsGiven,
        }
    }

    /// The initramfs at `path` with its compressed archives unpacked when `unpacking` says
    /// the host decompresses and the result is at most a quarter of guest RAM and 1 GiB (from
    /// the cache when it has it); else as it is.
    fn prepare(path: &'a Path, mem_size: u64, unpacking: &Unpacking) -> Result<Self, LoaderError> {
        let (mut file, size) = Self::open(path)?;
        if unpacking.decompressor == Decompressor::Guest || size > mem_size {
            // A file larger than guest RAM fails to load either way, with its own size.
            return Ok(Self::given(path, InitramfsData::File(file), size));
        }
        let limit = (mem_size / UNPACKED_INITRAMFS_RAM_DIVISOR).min(UNPACKED_INITRAMFS_MAX);
        let key = unpacking
            .cache
            .as_ref()
            .and_then(|_| cache_key(&file, path, EntryKind::Initramfs));
        let cache = || Some((open_cache(unpacking)?, key.clone()?));
        // Looked up where the directory is there already: it is created only for an entry.
        let existing = unpacking.cache.as_deref().is_some_and(Path::is_dir);
        if let Some((c, key)) = existing.then(cache).flatten() {
            if let Some((entry, size)) = c.get(&key, 1..=limit) {
                log::debug!(
                    "initramfs {}: archives unpacked, from the kernel cache ({} MiB)",
                    path.display(),
                    size >> 20
                );
                return Ok(Self {
                    path,
                    data: InitramfsData::File(entry),
                    size,
                    form: InitramfsForm::Unpacked { from_cache: true },
                });
            }
        }
        let t = Instant::now();
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).map_err(io_err(path))?;
        let size = bytes.len() as u64;
        let unpacked = match initramfs::unpack(&bytes, limit as usize) {
            Ok(Some(unpacked)) => unpacked,
            Ok(None) => return Ok(Self::given(path, InitramfsData::Bytes(bytes), size)),
            Err(why) => {
                log::info!("initramfs {}: the guest unpacks it ({why})", path.display());
                return Ok(Self::given(path, InitramfsData::Bytes(bytes), size));
            }
        };
        log::debug!(
            "initramfs {}: archives decompressed on the host ({} MiB to {} MiB in {:.1} ms)",
            path.display(),
            bytes.len() >> 20,
            unpacked.len() >> 20,
            t.elapsed().as_secs_f64() * 1e3
        );
        if let Some((c, key)) = cache() {
            let added = c.writer(&key).and_then(|mut w| {
                w.write(&unpacked)?;
                w.commit()
            });
            if let Err(e) = added {
                log::info!("kernel cache: cannot add {key}: {e}");
            }
        }
        Ok(Self {
            path,
            size: unpacked.len() as u64,
            data: InitramfsData::Bytes(unpacked),
            form: InitramfsForm::Unpacked { from_cache: false },
        })
    }
}

/// Loads everything the kernel needs and returns where to start it.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &str,
    unpacking: &Unpacking,
) -> Result<KernelEntry, LoaderError> {
    let initramfs = initramfs
        .map(|path| Initramfs::prepare(path, mem_size, unpacking))
        .transpose()?;
    let room = Room {
        mem,
        mem_size,
        cmdline,
        initramfs_size: initramfs.as_ref().map(|i| i.size),
    };
    let LoadedKernel {
        entry,
        start,
        kernel_end,
        header,
        form,
    } = load_kernel_image(&room, kernel, unpacking)?;

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
    let mut initramfs_form = None;
    if let Some(mut image) = initramfs {
        let initrd_addr_max = initrd_addr_max(&params.hdr);
        let low_end = low_ram_end(mem_size);
        let place = |size| initramfs_address(size, kernel_end, initrd_addr_max, low_end);
        // The end the initramfs must stay below (as initramfs_address computes it).
        let top = initrd_addr_max.saturating_add(1).min(low_end);
        if place(image.size).is_none() && image.form != InitramfsForm::AsGiven {
            log::info!(
                "initramfs {}: unpacked it does not fit below {top:#x}; the guest unpacks it",
                image.path.display(),
            );
            image = Initramfs::as_given(image.path)?;
        }
        let Initramfs {
            path,
            mut data,
            size,
            form,
        } = image;
        let addr = place(size).ok_or_else(|| LoaderError::InitramfsTooLarge {
            path: path.to_path_buf(),
            size,
            kernel_end,
            limit: top,
        })?;
        let guest_err = |e: vm_memory::GuestMemoryError| LoaderError::GuestMemory {
            what: "initramfs",
            detail: e.to_string(),
        };
        match &mut data {
            InitramfsData::File(file) => mem
                .read_exact_volatile_from(GuestAddress(addr), file, size as usize)
                .map_err(guest_err)?,
            InitramfsData::Bytes(bytes) => mem
                .write_slice(bytes, GuestAddress(addr))
                .map_err(guest_err)?,
        }
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        initramfs_loc = Some((addr, size));
        initramfs_form = Some(form);
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

    // The guest's decompressor works up to pref_address + init_size.
    let footprint_end = match (form, header.pref_address, header.init_size) {
        (KernelForm::BzImage, pref, size) if pref != 0 && size != 0 => {
            kernel_end.max(pref.saturating_add(u64::from(size)))
        }
        _ => kernel_end,
    };
    Ok(KernelEntry {
        entry,
        boot_params: ZERO_PAGE_START,
        kernel_end,
        initramfs: initramfs_loc,
        initramfs_form,
        boot_footprint: (start, footprint_end.min(low_ram_end(mem_size))),
        form,
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
    use crate::boot::bzimage_payload::tests as payload_tests;
    use crate::boot::vmlinux::{tests as vmlinux_tests, START_KERNEL_MAP};
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
        // A kernel the guest decompresses leaves no cache directory behind.
        let cache = std::env::temp_dir().join(format!("vmm-loader-nocache-{}", std::process::id()));
        let r = load(
            &m,
            MEM,
            &k,
            Some(&i),
            "console=ttyS0 quiet",
            &Unpacking {
                decompressor: Decompressor::Host,
                cache: Some(cache.clone()),
            },
        )
        .unwrap();
        assert_eq!(r.form, KernelForm::BzImage);
        assert!(!cache.exists(), "{} was created", cache.display());
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

    /// The initramfs in guest memory and its boot_params fields, after `load`.
    fn loaded_initramfs(m: &GuestMemoryMmap, r: &KernelEntry) -> Vec<u8> {
        let (addr, size) = r.initramfs.unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let (img, sz) = (p.hdr.ramdisk_image, p.hdr.ramdisk_size);
        assert_eq!((u64::from(img), u64::from(sz)), (addr, size));
        let mut bytes = vec![0u8; size as usize];
        m.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        bytes
    }

    #[test]
    fn a_compressed_initramfs_goes_in_unpacked_and_comes_from_the_cache_next_time() {
        use crate::boot::initramfs::tests::{archive, gzip};
        let k = temp_file("bz-initrd", &fake_bzimage(0x3));
        let cpio = archive(&[("init", b"#!/bin/sh\n"), ("data", &[5u8; 70_000])]);
        let packed = gzip(&cpio);
        let i = temp_file("initrd.gz", &packed);
        let cache = std::env::temp_dir().join(format!("vmm-loader-icache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let host = Unpacking {
            decompressor: Decompressor::Host,
            cache: Some(cache.clone()),
        };
        let boot = |unpacking: &Unpacking| {
            let m = mem();
            let r = load(&m, MEM, &k, Some(&i), "quiet", unpacking).unwrap();
            (r.initramfs_form.unwrap(), loaded_initramfs(&m, &r))
        };
        let (form, bytes) = boot(&host);
        assert_eq!(form, InitramfsForm::Unpacked { from_cache: false });
        assert_eq!(bytes, cpio);
        let (form, bytes) = boot(&host);
        assert_eq!(form, InitramfsForm::Unpacked { from_cache: true });
        assert_eq!(bytes, cpio);
        // Without a cache, and with the guest's decompressors (the file as it is).
        let (form, bytes) = boot(&Unpacking {
            decompressor: Decompressor::Host,
            cache: None,
        });
        assert_eq!(
            (form, bytes),
            (InitramfsForm::Unpacked { from_cache: false }, cpio)
        );
        let (form, bytes) = boot(&Unpacking {
            decompressor: Decompressor::Guest,
            cache: Some(cache.clone()),
        });
        assert_eq!((form, bytes), (InitramfsForm::AsGiven, packed.clone()));
        // Rewritten in place: a new entry, never the old one's contents.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let cpio2 = archive(&[("init", b"#!/bin/sh\necho 2\n")]);
        std::fs::write(&i, gzip(&cpio2)).unwrap();
        let (form, bytes) = boot(&host);
        assert_eq!(
            (form, bytes),
            (InitramfsForm::Unpacked { from_cache: false }, cpio2)
        );
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn an_initramfs_that_unpacks_too_large_or_does_not_fit_goes_in_as_it_is() {
        use crate::boot::initramfs::tests::{archive, gzip};
        let host = Unpacking {
            decompressor: Decompressor::Host,
            cache: None,
        };
        // More than a quarter of guest RAM unpacked (16 MiB of 64).
        let big = gzip(&archive(&[("zeros", &vec![0u8; 17 << 20])]));
        let i = temp_file("initrd-big.gz", &big);
        let k = temp_file("bz-big", &fake_bzimage(0x3));
        let m = mem();
        let r = load(&m, MEM, &k, Some(&i), "quiet", &host).unwrap();
        assert_eq!(r.initramfs_form, Some(InitramfsForm::AsGiven));
        assert_eq!(loaded_initramfs(&m, &r), big);
        // Within the quarter, but not below the kernel's initrd_addr_max (4 MiB) with the
        // kernel ending above 1 MiB, where the compressed file fits.
        let mut bz = fake_bzimage(0x3);
        bz[0x22c..0x230].copy_from_slice(&0x3f_ffffu32.to_le_bytes());
        let k = temp_file("bz-low", &bz);
        let mid = gzip(&archive(&[("zeros", &vec![0u8; 4 << 20])]));
        let i = temp_file("initrd-mid.gz", &mid);
        let m = mem();
        let r = load(&m, MEM, &k, Some(&i), "quiet", &host).unwrap();
        assert_eq!(r.initramfs_form, Some(InitramfsForm::AsGiven));
        assert_eq!(loaded_initramfs(&m, &r), mid);
        // A format the VMM does not decompress: as it is too.
        let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
        xz.extend_from_slice(&[3; 100]);
        let i = temp_file("initrd.xz", &xz);
        let m = mem();
        let r = load(&m, MEM, &k, Some(&i), "quiet", &host).unwrap();
        assert_eq!(r.initramfs_form, Some(InitramfsForm::AsGiven));
        assert_eq!(loaded_initramfs(&m, &r), xz);
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
        let r = load(&m, MEM, &k, None, "console=ttyS0", &Unpacking::default()).unwrap();
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

    /// A bzImage whose zstd payload is a vmlinux at 16 MiB (entry 0x40 into it) with a relocation
    /// table naming the 64-bit address at its start.
    fn packed_vmlinux() -> Vec<u8> {
        let base = 0x100_0000;
        let v = START_KERNEL_MAP + base;
        let mut body = vec![0xf4u8; 4096];
        body[..8].copy_from_slice(&(v + 0x40).to_le_bytes());
        let elf = vmlinux_tests::vmlinux(
            base,
            base + 0x40,
            &body,
            0x1000,
            &vmlinux_tests::table(&[v], None, &[]),
        );
        let stream = payload_tests::zstd_bytes(&elf);
        payload_tests::bzimage(&stream, elf.len() as u32, 1 << 20)
    }

    /// An unpacked kernel's (format, placement, random?, from the cache?).
    fn unpacked(form: KernelForm) -> (Compression, Placement, bool, bool) {
        match form {
            KernelForm::Unpacked {
                compression,
                placement,
                randomised,
                from_cache,
            } => (compression, placement, randomised, from_cache),
            other => panic!("not unpacked by the VMM: {other:?}"),
        }
    }

    /// The kernel of [`packed_vmlinux`] is at `placement`: its body is there and its relocated
    /// field holds its entry point's moved virtual address.
    fn assert_placed(m: &GuestMemoryMmap, placement: Placement) {
        let field: u64 = m.read_obj(GuestAddress(placement.phys)).unwrap();
        assert_eq!(field, START_KERNEL_MAP + 0x100_0040 + placement.virt_offset);
        let last: u8 = m.read_obj(GuestAddress(placement.phys + 4095)).unwrap();
        assert_eq!(last, 0xf4);
    }

    #[test]
    fn a_zstd_bzimage_is_unpacked_and_placed_at_random() {
        let k = temp_file("bzzstd", &packed_vmlinux());
        let i = temp_file("initrd2", &[0xab; 10_000]);
        let mut phys = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let m = mem();
            let r = load(
                &m,
                MEM,
                &k,
                Some(&i),
                "console=ttyS0",
                &Unpacking::default(),
            )
            .unwrap();
            let (compression, placement, randomised, from_cache) = unpacked(r.form);
            assert_eq!(
                (compression, randomised, from_cache),
                (Compression::Zstd, true, false)
            );
            assert_eq!(r.entry, placement.phys + 0x40);
            assert_eq!(
                r.boot_footprint,
                (placement.phys, placement.phys + 4096 + 0x1000)
            );
            let (addr, _) = r.initramfs.unwrap();
            assert!(r.kernel_end <= addr);
            assert_placed(&m, placement);
            let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
            let (flags, init_size) = (p.hdr.loadflags, p.hdr.init_size);
            assert_eq!((flags & KASLR_FLAG, init_size), (KASLR_FLAG, 1 << 20));
            phys.insert((placement.phys, placement.virt_offset));
        }
        assert!(phys.len() > 1, "8 boots, one placement: {phys:x?}");
        std::fs::remove_file(k).unwrap();
        std::fs::remove_file(i).unwrap();
    }

    #[test]
    fn a_second_boot_unpacks_from_the_cache_to_the_same_kernel() {
        let k = temp_file("bzcache", &packed_vmlinux());
        let dir = std::env::temp_dir().join(format!("vmm-loader-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let unpacking = Unpacking {
            decompressor: Decompressor::Host,
            cache: Some(dir.clone()),
        };
        let mut images = Vec::new();
        for want_cached in [false, true, true] {
            let m = mem();
            let r = load(&m, MEM, &k, None, "console=ttyS0 nokaslr", &unpacking).unwrap();
            assert_eq!(unpacked(r.form).3, want_cached);
            let mut image = vec![0u8; 4096];
            m.read_slice(&mut image, GuestAddress(0x100_0000)).unwrap();
            images.push(image);
        }
        assert!(images.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // From the cache at a random place: relocated like a fresh unpack.
        let m = mem();
        let r = load(&m, MEM, &k, None, "console=ttyS0", &unpacking).unwrap();
        let (_, placement, randomised, from_cache) = unpacked(r.form);
        assert!(randomised && from_cache);
        assert_placed(&m, placement);
        // An entry of the wrong length (a torn or foreign file) is not used, and is replaced.
        let entry = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&entry, b"short").unwrap();
        let r = load(&mem(), MEM, &k, None, "console=ttyS0", &unpacking).unwrap();
        assert!(matches!(
            r.form,
            KernelForm::Unpacked {
                from_cache: false,
                ..
            }
        ));
        let r = load(&mem(), MEM, &k, None, "console=ttyS0", &unpacking).unwrap();
        assert!(matches!(
            r.form,
            KernelForm::Unpacked {
                from_cache: true,
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn nokaslr_and_guest_decompression_keep_the_kernel_where_it_was_linked() {
        let k = temp_file("bzzstd2", &packed_vmlinux());
        let m = mem();
        let r = load(
            &m,
            MEM,
            &k,
            None,
            "console=ttyS0 nokaslr",
            &Unpacking::default(),
        )
        .unwrap();
        assert!(!unpacked(r.form).2);
        assert_eq!(r.entry, 0x100_0040);
        let field: u64 = m.read_obj(GuestAddress(0x100_0000)).unwrap();
        assert_eq!(field, START_KERNEL_MAP + 0x100_0040);
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!(p.hdr.loadflags & KASLR_FLAG, 0);

        // A kernel that is not relocatable stays where it was linked.
        let mut fixed = packed_vmlinux();
        fixed[0x234] = 0;
        let kf = temp_file("bzfixed", &fixed);
        let m = mem();
        let r = load(&m, MEM, &kf, None, "console=ttyS0", &Unpacking::default()).unwrap();
        assert!(!unpacked(r.form).2);
        assert_eq!(r.entry, 0x100_0040);
        std::fs::remove_file(kf).unwrap();

        let m = mem();
        let r = load(
            &m,
            MEM,
            &k,
            None,
            "console=ttyS0",
            &Unpacking {
                decompressor: Decompressor::Guest,
                cache: None,
            },
        )
        .unwrap();
        assert_eq!(r.form, KernelForm::BzImage);
        assert_eq!(r.entry, HIMEM_START + 0x200);
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn bzimage_without_64bit_entry_is_rejected() {
        let k = temp_file("bz32", &fake_bzimage(0));
        let e = load(
            &mem(),
            MEM,
            &k,
            None,
            "console=ttyS0",
            &Unpacking::default(),
        )
        .unwrap_err();
        assert!(matches!(e, LoaderError::No64BitEntry(_)), "{e}");
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn garbage_kernel_is_an_error() {
        let k = temp_file("junk", &[0x42; 4096]);
        let e = load(&mem(), MEM, &k, None, "", &Unpacking::default()).unwrap_err();
        assert!(matches!(e, LoaderError::Kernel { .. }), "{e}");
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn too_long_cmdline_is_an_error() {
        let k = temp_file("bzlong", &fake_bzimage(1));
        let long = "a".repeat(3000);
        let e = load(&mem(), MEM, &k, None, &long, &Unpacking::default()).unwrap_err();
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
