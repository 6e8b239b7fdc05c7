//! dmabuf-rigtest: runs in the rig's L1 against the real kernel (rig scenario dmabuf).
//!
//! Usage: `dmabuf-rigtest --bdf 0000:00:03.0 --group /dev/vfio/N`
//!
//! With the ivshmem device (1af4:1110) bound to vfio-pci, it opens the VFIO
//! container/group/device with raw ioctls, fills a `vfio_dmabuf::DeviceRegistry`
//! the way the VMM's VFIO device does (BAR2 and BAR0 at made-up guest
//! addresses), and checks:
//! 1. a multi-range export from BAR2 (non-contiguous, out-of-order ranges)
//!    gives a real dma-buf (fdinfo `exp_name: vfio_pci_core`, `size:` = sum);
//! 2. reading the same entries through the device fd (`read_blob`, pread) gives, in entry
//!    order, the per-page pattern L0 wrote into the ivshmem backing file, and fails with EIO
//!    (no SIGBUS) while memory decoding is off;
//! 3. each error class (unaligned, past the BAR, wrong region, two regions)
//!    gives the expected typed error, from our checks and from the real kernel
//!    (and the crate's fake kernel gives the same errnos as the real one);
//! 4. a udmabuf export of a sealed memfd succeeds, its mmap reads back the
//!    memfd's bytes in entry order, and the real driver's refusals match the fake's.
//!
//! Output: progress lines, `DATA k=v ...` lines and one final
//! `RESULT PASS|FAIL [reason=..] k=v ...` line (the scenario script turns them
//! into RIG-DATA / RIG-RESULT).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use guest_tools::mapping::Mapping;
use vfio_bindings::bindings::vfio::{
    vfio_group_status, vfio_region_info, VFIO_TYPE1v2_IOMMU, VFIO_GROUP_FLAGS_VIABLE,
};
use vfio_dmabuf::fake_kernel::{FakeUdmabuf, FakeVfioPci};
use vfio_dmabuf::memfd::{add_seals, create_memfd};
use vfio_dmabuf::udmabuf::{encode_create_list, SysUdmabuf};
use vfio_dmabuf::{
    BlobEntry, DeviceRegistry, DmaBufError, DmaRange, GuestRam, KernelOp, RegionInfo,
    SysDeviceFeature, UdmabufExporter, UdmabufIoctl,
};

const P: u64 = 4096;
/// Made-up guest-physical addresses for the two BARs (as a VMM would place them).
const BAR2_GPA: u64 = 0xe000_0000;
const BAR0_GPA: u64 = 0xe200_0000;

const VFIO_BASE: libc::c_ulong = 100;
const fn vfio_io(nr: libc::c_ulong) -> libc::c_ulong {
    (b';' as libc::c_ulong) << 8 | (VFIO_BASE + nr)
}
const VFIO_GET_API_VERSION: libc::c_ulong = vfio_io(0);
const VFIO_SET_IOMMU: libc::c_ulong = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);

/// The per-page pattern the rig test (tests/tests/rig_dmabuf.rs) writes into
/// the ivshmem backing file before boot: "DMAB", page index (u32 LE), then
/// the byte `page * 7 + 1` repeated. Keep both copies in step.
fn page_header(page: u64) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[..4].copy_from_slice(b"DMAB");
    h[4..8].copy_from_slice(&(page as u32).to_le_bytes());
    h[8] = (page.wrapping_mul(7).wrapping_add(1)) as u8;
    h
}

struct Report {
    data: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn data(&mut self, kv: String) {
        println!("DATA {kv}");
        self.data.push(kv);
    }
    fn check(&mut self, ok: bool, what: &str) {
        println!(
            "dmabuf-rigtest: {} {what}",
            if ok { "ok  " } else { "FAIL" }
        );
        if !ok {
            self.failures.push(
                what.split_whitespace()
                    .next()
                    .unwrap_or("check")
                    .to_string(),
            );
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ioctl_val(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: libc::c_ulong) -> Result<i32, String> {
    // SAFETY: an ioctl whose argument is an integer (no memory passed).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(format!("ioctl {req:#x} failed: errno {}", errno()))
    } else {
        Ok(r)
    }
}

fn ioctl_ptr<T>(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: &mut T) -> Result<i32, String> {
    // SAFETY: `arg` is a live, properly sized struct of the type the ioctl expects.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        Err(format!("ioctl {req:#x} failed: errno {}", errno()))
    } else {
        Ok(r)
    }
}

struct Vfio {
    _container: File,
    _group: File,
    device: OwnedFd,
}

fn open_vfio(group_path: &str, bdf: &str) -> Result<Vfio, String> {
    let rw = |p: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .map_err(|e| format!("open {p}: {e}"))
    };
    let container = rw("/dev/vfio/vfio")?;
    let api = ioctl_val(container.as_fd(), VFIO_GET_API_VERSION, 0)?;
    let group = rw(group_path)?;
    let mut status = vfio_group_status {
        argsz: std::mem::size_of::<vfio_group_status>() as u32,
        flags: 0,
    };
    ioctl_ptr(group.as_fd(), VFIO_GROUP_GET_STATUS, &mut status)?;
    if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
        return Err("group not viable".into());
    }
    let mut cfd = container.as_raw_fd();
    ioctl_ptr(group.as_fd(), VFIO_GROUP_SET_CONTAINER, &mut cfd)?;
    ioctl_val(
        container.as_fd(),
        VFIO_SET_IOMMU,
        libc::c_ulong::from(VFIO_TYPE1v2_IOMMU),
    )?;
    let name = CString::new(bdf).map_err(|e| e.to_string())?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            VFIO_GROUP_GET_DEVICE_FD as _,
            name.as_ptr(),
        )
    };
    if fd < 0 {
        return Err(format!("VFIO_GROUP_GET_DEVICE_FD: errno {}", errno()));
    }
    println!("dmabuf-rigtest: vfio api {api}, device fd {fd}");
    // SAFETY: the ioctl returned a new fd that we own.
    let device = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Vfio {
        _container: container,
        _group: group,
        device,
    })
}

fn region_info(dev: BorrowedFd<'_>, index: u32) -> Result<vfio_region_info, String> {
    let mut ri = vfio_region_info {
        argsz: std::mem::size_of::<vfio_region_info>() as u32,
        index,
        ..Default::default()
    };
    ioctl_ptr(dev, VFIO_DEVICE_GET_REGION_INFO, &mut ri)?;
    Ok(ri)
}

/// `/proc/self/fdinfo/<fd>` lines of interest (`size:`, `exp_name:`, `flags:`), tab-free.
fn fdinfo(fd: BorrowedFd<'_>) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .unwrap_or_default();
    for l in text.lines() {
        println!("dmabuf-rigtest: fdinfo {}: {l}", fd.as_raw_fd());
    }
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| matches!(k.as_str(), "size" | "exp_name" | "flags" | "count"))
        .collect()
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> &'a str {
    kv.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn variant(e: &DmaBufError) -> String {
    let dbg = format!("{e:?}");
    let name: String = dbg.chars().take_while(|c| c.is_alphanumeric()).collect();
    match e.errno() {
        Some(n) => format!("{name}/{}", errno_name(n.0)),
        None => name,
    }
}

fn errno_name(n: i32) -> String {
    match n {
        libc::EINVAL => "EINVAL".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::EOVERFLOW => "EOVERFLOW".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EBADFD => "EBADFD".into(),
        libc::ENOTTY => "ENOTTY".into(),
        libc::EIO => "EIO".into(),
        n => format!("E{n}"),
    }
}

fn run(bdf: &str, group: &str, rep: &mut Report) -> Result<(), String> {
    let vfio = open_vfio(group, bdf)?;
    let dev = vfio.device.as_fd();
    let r2 = region_info(dev, 2)?;
    let r0 = region_info(dev, 0)?;
    rep.data(format!(
        "bar2_size={:#x} bar2_flags={:#x} bar2_fd_offset={:#x} bar0_size={:#x}",
        r2.size, r2.flags, r2.offset, r0.size
    ));

    // The VMM's VFIO device would do exactly this when it maps the BARs.
    let mut reg = DeviceRegistry::new();
    let id = reg
        .register_device(format!("ivshmem {bdf}"), dev)
        .map_err(|e| e.to_string())?;
    reg.set_region(
        id,
        RegionInfo::new(2, BAR2_GPA, r2.size, r2.offset, r2.flags),
    )
    .map_err(|e| e.to_string())?;
    reg.set_region(
        id,
        RegionInfo::new(0, BAR0_GPA, r0.size, r0.offset, r0.flags),
    )
    .map_err(|e| e.to_string())?;
    let sys = SysDeviceFeature;
    let probe = reg.probe_dma_buf(id, &sys);
    rep.check(
        probe.is_ok(),
        &format!("probe PROBE|GET|DMA_BUF -> {probe:?}"),
    );

    // 1. multi-range export: guest order 5,6 | 1 | 10,11,12 | 3 (coalesces to 4 ranges).
    let pages: [u64; 7] = [5, 6, 1, 10, 11, 12, 3];
    let entries: Vec<BlobEntry> = pages
        .iter()
        .map(|p| BlobEntry::new(BAR2_GPA + p * P, P))
        .collect();
    let t = reg
        .translate(&entries)
        .map_err(|e| format!("translate: {e}"))?;
    let want = vec![
        DmaRange {
            offset: 5 * P,
            len: 2 * P,
        },
        DmaRange { offset: P, len: P },
        DmaRange {
            offset: 10 * P,
            len: 3 * P,
        },
        DmaRange {
            offset: 3 * P,
            len: P,
        },
    ];
    rep.check(
        t.ranges == want,
        &format!("translate ranges={:?}", t.ranges),
    );
    let fd = reg
        .export(&t, libc::O_RDWR | libc::O_CLOEXEC, &sys)
        .map_err(|e| format!("export: {e}"))?;
    let info = fdinfo(fd.as_fd());
    let (exp_name, size) = (
        get(&info, "exp_name").to_string(),
        get(&info, "size").to_string(),
    );
    rep.data(format!(
        "vfio_exp_name={exp_name} vfio_size={size} vfio_ranges={} vfio_total={}",
        t.ranges.len(),
        t.total_len
    ));
    rep.check(
        exp_name == "vfio_pci_core",
        &format!("fdinfo exp_name={exp_name}"),
    );
    rep.check(
        size == (7 * P).to_string(),
        &format!("fdinfo size={size} (want {})", 7 * P),
    );

    // 2. The blob read through the device fd (pread), in entry order, holds L0's pattern.
    let mut via_fd = vec![0u8; t.total_len as usize];
    let pread_ok = reg.read_blob(&t, 0, &mut via_fd);
    rep.check(pread_ok.is_ok(), &format!("read_blob ({pread_ok:?})"));
    let mut seen = Vec::new();
    let mut all_ok = true;
    for (i, p) in pages.iter().enumerate() {
        let page = &via_fd[i * P as usize..(i + 1) * P as usize];
        let h = &page[..9];
        let idx = if &h[..4] == b"DMAB" {
            u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as i64
        } else {
            -1
        };
        seen.push(idx.to_string());
        all_ok &= h == page_header(*p) && page[P as usize - 1] == page_header(*p)[8];
    }
    let seen = seen.join(",");
    rep.data(format!(
        "blob_read_pages={seen} blob_read_len={}",
        via_fd.len()
    ));
    rep.check(
        all_ok,
        &format!("read_blob reads pages {seen} in entry order"),
    );

    // 2b. With memory decoding off, pread fails with EIO where a mapping would SIGBUS.
    let cfg = region_info(dev, 7)?;
    let mut cmd = [0u8; 2];
    let dev_file = File::from(vfio.device.try_clone().map_err(|e| e.to_string())?);
    dev_file
        .read_exact_at(&mut cmd, cfg.offset + 4)
        .map_err(|e| format!("read command: {e}"))?;
    let off = u16::from_le_bytes(cmd) & !0x2;
    dev_file
        .write_all_at(&off.to_le_bytes(), cfg.offset + 4)
        .map_err(|e| format!("write command: {e}"))?;
    let mut b = [0u8; 16];
    let mem_off = reg.read_blob(&t, 0, &mut b);
    dev_file
        .write_all_at(&cmd, cfg.offset + 4)
        .map_err(|e| format!("restore command: {e}"))?;
    let mem_on = reg.read_blob(&t, 0, &mut b);
    let desc = match &mem_off {
        Ok(()) => "Ok".to_string(),
        Err(e) => variant(e),
    };
    rep.data(format!(
        "mem_off_read={desc} command={:#x}",
        u16::from_le_bytes(cmd)
    ));
    rep.check(
        matches!(&mem_off, Err(DmaBufError::Kernel { op: KernelOp::DeviceRead, errno }) if errno.0 == libc::EIO)
            && mem_on.is_ok()
            && b[..9] == page_header(pages[0]),
        &format!("mem_off read_blob -> {desc}, after restore {mem_on:?}"),
    );

    // 3. error classes: our typed errors, then the real kernel's, then the fake's.
    let fake = FakeVfioPci::ivshmem_like();
    let ours: [(&str, Vec<BlobEntry>, &str); 4] = [
        (
            "unaligned",
            vec![BlobEntry::new(BAR2_GPA + 0x800, P)],
            "Unaligned",
        ),
        (
            "past_bar",
            vec![BlobEntry::new(BAR2_GPA + r2.size - P, 2 * P)],
            "PastRegionEnd",
        ),
        (
            "wrong_region",
            vec![BlobEntry::new(BAR0_GPA, P)],
            "PastRegionEnd",
        ),
        (
            "two_regions",
            vec![BlobEntry::new(BAR2_GPA, P), BlobEntry::new(BAR0_GPA, P)],
            "DifferentRegion",
        ),
    ];
    for (name, es, want) in ours {
        match reg.translate(&es) {
            Err(e) => {
                rep.data(format!(
                    "ours_{name}={} guest={}",
                    variant(&e),
                    e.is_guest_fault()
                ));
                rep.check(
                    variant(&e) == want && e.is_guest_fault(),
                    &format!("ours_{name}: {e}"),
                );
            }
            Ok(t) => rep.check(false, &format!("ours_{name}: translated to {t:?}")),
        }
    }
    let kernel_cases: [(&str, u32, Vec<DmaRange>, i32, bool); 6] = [
        (
            "unaligned",
            2,
            vec![DmaRange {
                offset: 0x800,
                len: P,
            }],
            libc::EINVAL,
            true,
        ),
        (
            "past_bar",
            2,
            vec![
                DmaRange { offset: 0, len: P },
                DmaRange {
                    offset: r2.size,
                    len: P,
                },
            ],
            libc::EINVAL,
            true,
        ),
        (
            "wrong_region",
            0,
            vec![DmaRange { offset: 0, len: P }],
            libc::EINVAL,
            true,
        ),
        (
            "not_a_bar",
            6,
            vec![DmaRange { offset: 0, len: P }],
            libc::ENODEV,
            true,
        ),
        (
            "zero_len",
            2,
            vec![DmaRange { offset: 0, len: 0 }],
            libc::EINVAL,
            true,
        ),
        (
            "overflow",
            2,
            vec![DmaRange {
                offset: u64::MAX - P + 1,
                len: P,
            }],
            libc::EOVERFLOW,
            false,
        ),
    ];
    let mut agree = true;
    for (name, region, ranges, want_errno, guest) in kernel_cases {
        let real = reg.export_ranges(id, region, &ranges, libc::O_RDWR | libc::O_CLOEXEC, &sys);
        let faked = reg.export_ranges(id, region, &ranges, libc::O_RDWR | libc::O_CLOEXEC, &fake);
        let desc = |r: &Result<OwnedFd, DmaBufError>| match r {
            Ok(_) => "Ok".to_string(),
            Err(e) => variant(e),
        };
        let (dr, df) = (desc(&real), desc(&faked));
        agree &= dr == df;
        rep.data(format!("kernel_{name}={dr} fake_{name}={df}"));
        let ok = matches!(&real, Err(e @ DmaBufError::Kernel { op: KernelOp::VfioDmaBufExport, errno })
            if errno.0 == want_errno && e.is_guest_fault() == guest);
        rep.check(ok, &format!("kernel_{name}: real {dr}, fake {df}"));
    }
    rep.check(agree, "fake_kernel_agrees_with_real_kernel");
    rep.data(format!("fake_agrees={agree}"));
    drop(fd);
    Ok(())
}

fn run_udmabuf(rep: &mut Report) -> Result<(), String> {
    let pages = 64u64;
    let memfd = create_memfd("guest-ram", pages * P).map_err(|e| e.to_string())?;
    let f = File::from(memfd.try_clone().map_err(|e| e.to_string())?);
    for p in 0..pages {
        let mut page = vec![(p as u8) ^ 0x5a; P as usize];
        page[..9].copy_from_slice(&page_header(p));
        f.write_all_at(&page, p * P).map_err(|e| e.to_string())?;
    }
    add_seals(memfd.as_fd(), libc::F_SEAL_SHRINK).map_err(|e| e.to_string())?;
    let mut ram = GuestRam::new();
    ram.add_region(0x4000_0000, pages * P, memfd.as_fd(), 0)
        .map_err(|e| e.to_string())?;
    let x = UdmabufExporter::open(ram).map_err(|e| format!("open /dev/udmabuf: {e}"))?;
    let order: [u64; 5] = [7, 8, 2, 40, 0];
    let entries: Vec<BlobEntry> = order
        .iter()
        .map(|p| BlobEntry::new(0x4000_0000 + p * P, P))
        .collect();
    let (items, _) = x.prepare(&entries).map_err(|e| e.to_string())?;
    let (fd, size) = x
        .export(&entries, true)
        .map_err(|e| format!("udmabuf export: {e}"))?;
    let info = fdinfo(fd.as_fd());
    let (exp_name, fsize) = (
        get(&info, "exp_name").to_string(),
        get(&info, "size").to_string(),
    );
    rep.data(format!(
        "udmabuf_exp_name={exp_name} udmabuf_size={fsize} udmabuf_items={}",
        items.len()
    ));
    rep.check(
        exp_name == "udmabuf" && fsize == size.to_string(),
        &format!("udmabuf fdinfo exp_name={exp_name} size={fsize}"),
    );
    let m = Mapping::shared(fd.as_fd(), size as usize, "udmabuf").map_err(|e| e.to_string())?;
    let mut ok = true;
    let mut seen = Vec::new();
    for (i, p) in order.iter().enumerate() {
        let mut h = [0u8; 9];
        let mut tail = [0u8; 1];
        m.read_bytes(i * P as usize, &mut h);
        m.read_bytes((i + 1) * P as usize - 1, &mut tail);
        seen.push(u32::from_le_bytes([h[4], h[5], h[6], h[7]]).to_string());
        ok &= h == page_header(*p) && tail[0] == (*p as u8) ^ 0x5a;
    }
    let seen = seen.join(",");
    rep.data(format!("udmabuf_map_pages={seen}"));
    rep.check(
        ok,
        &format!("udmabuf mmap reads pages {seen} in entry order"),
    );

    // The real driver's refusals, compared with the fake's (our pre-checks bypassed).
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/udmabuf")
        .map_err(|e| e.to_string())?;
    let unsealed = create_memfd("unsealed", 16 * P).map_err(|e| e.to_string())?;
    let g = memfd.as_raw_fd();
    type Items = Vec<(i32, u64, u64)>;
    let cases: [(&str, Items); 4] = [
        ("unsealed", vec![(unsealed.as_raw_fd(), 0, P)]),
        ("unaligned", vec![(g, 0x800, P)]),
        ("too_many", vec![(g, 0, P); 1025]),
        ("not_a_memfd", vec![(dev.as_raw_fd(), 0, P)]),
    ];
    let mut agree = true;
    for (name, items) in cases {
        let mut a1 = encode_create_list(1, &items).ok_or("encode")?;
        let mut a2 = a1.clone();
        let real = SysUdmabuf.create_list(dev.as_fd(), &mut a1);
        let faked = FakeUdmabuf::default().create_list(dev.as_fd(), &mut a2);
        for fd in [&real, &faked].into_iter().flatten() {
            // SAFETY: a successful create returns a new fd that we own.
            drop(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
        let d = |r: &Result<i32, vfio_dmabuf::Errno>| match r {
            Ok(_) => "Ok".to_string(),
            Err(e) => errno_name(e.0),
        };
        agree &= d(&real) == d(&faked);
        rep.data(format!(
            "udmabuf_kernel_{name}={} udmabuf_fake_{name}={}",
            d(&real),
            d(&faked)
        ));
        rep.check(
            real.is_err(),
            &format!("udmabuf_kernel_{name} refused: {}", d(&real)),
        );
    }
    rep.check(agree, "fake_udmabuf_agrees_with_real_kernel");
    // Our own pre-check classifies the unsealed memfd as a host fault before any ioctl.
    let mut ram2 = GuestRam::new();
    ram2.add_region(0, 16 * P, unsealed.as_fd(), 0)
        .map_err(|e| e.to_string())?;
    let x2 = UdmabufExporter::open(ram2).map_err(|e| e.to_string())?;
    match x2.export(&[BlobEntry::new(0, P)], true) {
        Err(e) => {
            rep.data(format!(
                "ours_unsealed={} guest={}",
                variant(&e),
                e.is_guest_fault()
            ));
            rep.check(
                matches!(e, DmaBufError::BadSeals { .. }) && !e.is_guest_fault(),
                &format!("ours_unsealed: {e}"),
            );
        }
        Ok(_) => rep.check(false, "ours_unsealed exported"),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(bdf), Some(group)) = (arg("--bdf"), arg("--group")) else {
        eprintln!("usage: dmabuf-rigtest --bdf BDF --group /dev/vfio/N");
        println!("RESULT FAIL reason=usage");
        std::process::exit(2);
    };
    let mut rep = Report {
        data: Vec::new(),
        failures: Vec::new(),
    };
    if let Err(e) = run(&bdf, &group, &mut rep) {
        println!("dmabuf-rigtest: vfio part aborted: {e}");
        rep.failures.push("vfio-aborted".into());
    }
    if let Err(e) = run_udmabuf(&mut rep) {
        println!("dmabuf-rigtest: udmabuf part aborted: {e}");
        rep.failures.push("udmabuf-aborted".into());
    }
    let n_checks = rep.data.len();
    if rep.failures.is_empty() {
        println!("RESULT PASS data_lines={n_checks}");
    } else {
        println!(
            "RESULT FAIL reason={} failed={}",
            rep.failures[0],
            rep.failures.join(",")
        );
        std::process::exit(1);
    }
}
