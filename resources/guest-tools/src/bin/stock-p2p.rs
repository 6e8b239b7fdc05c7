//! stock-p2p: the stock guest path for a peer device's memory on the screen (L2 program of the rig
//! scenario stock-p2p). Needs an L2 kernel with vfio-pci (noiommu mode, DMA_BUF) and the virtio-gpu
//! DRM driver (Linux 6.14+ imports a peer's dma-buf and sends its DMA addresses as a guest blob).
//!
//! 1. Facts about the guest: CPU vendor and family (`/proc/cpuinfo`), one `pci=` line per PCI
//!    device (sysfs: BDF, class, ids, driver, upstream path).
//! 2. Binds ivshmem (1af4:1110) to vfio-pci, opens its group (`/dev/vfio/noiommu-N`, container
//!    type VFIO_NOIOMMU_IOMMU) and device, maps BAR2 through VFIO and paints two 1280x800
//!    XRGB8888 framebuffers into out-of-order 4 KiB pages of it
//!    (`guest_tools::pattern::p2p_fb_pages`, variants VARIANT_P2P_FRONT and VARIANT_P2P_BACK).
//! 3. Per framebuffer: ONE dma-buf of its 1000 page ranges (VFIO_DEVICE_FEATURE_DMA_BUF),
//!    DRM_IOCTL_PRIME_FD_TO_HANDLE on the virtio-gpu card, DRM_IOCTL_MODE_ADDFB2. A refused
//!    import is reported (`import=refused errno=...` and the kernel's p2pdma lines) and ends the
//!    program with FAIL reason=import-refused.
//! 4. SETCRTC with the front framebuffer, DIRTYFB, a hold; then `--flips` page flips between the
//!    two (DRM_IOCTL_MODE_PAGE_FLIP with an event, each waited for), timed; a hold.
//! 5. Revoke (`--revoke close`, default): unmaps BAR2 and closes the VFIO device fd (VFIO revokes
//!    the device's dma-bufs; the importer is told through move_notify); or (`--revoke decode`)
//!    turns Memory Space off in the command register through VFIO's config region. A hold, then a
//!    DIRTYFB of the revoked front framebuffer (its errno is reported).
//! 6. Again, with the front framebuffer's pages painted with VARIANT_P2P_AGAIN: after `close`, a
//!    new device fd, BAR2 mapped again, a new dma-buf imported (a new GEM handle), ADDFB2,
//!    SETCRTC; after `decode`, Memory Space on again and the same framebuffer. DIRTYFB, a hold.
//! 7. RMFB and GEM_CLOSE of everything; the kernel's log lines of the run that mention p2pdma,
//!    vfio, virtio_gpu or drm are relayed (`kernel:` lines) and device errors counted.
//!
//! Arguments may also come from `rig.p2p=ARG,ARG,...` on the kernel command line.
//! Every phase starts with `RIG-DATA scenario=stock-p2p phase=<name>` so that L1 can place its
//! samples of the vmm's fds and mappings between them. Exit 0 iff PASS (every step worked).

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use guest_tools::drm::{
    find_virtio_gpu_card, mode_name, Card, ClipRect, VIRTGPU_PARAM_RESOURCE_BLOB,
};
use guest_tools::error::{Error, Result};
use guest_tools::kmsg::KernelLog;
use guest_tools::mapping::Mapping;
use guest_tools::pattern::{
    format_entries, p2p_fb_pages, paint_blob, P2P_FB_BASE, VARIANT_P2P_AGAIN, VARIANT_P2P_BACK,
    VARIANT_P2P_FRONT,
};
use guest_tools::pci::{PciDevice, PCI_COMMAND_MEMORY, SYSFS_PCI_DEVICES};
use guest_tools::report::Reporter;
use guest_tools::vfio::{
    bind_vfio_pci, dmabuf_fdinfo, group_node, VFIO_TYPE1v2_IOMMU, VfioDevice, VfioGroup,
    VFIO_NOIOMMU_IOMMU,
};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 800;
const BAR: u32 = 2;
/// Longest wait for one page flip's event.
const FLIP_TIMEOUT: Duration = Duration::from_secs(10);

/// How the exporter revokes its dma-bufs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Revoke {
    /// Unmap BAR2 and close the VFIO device fd (the dma-bufs stay revoked; a new device fd, a
    /// new export and a new import show the image again).
    Close,
    /// Turn Memory Space off in the command register through VFIO, then on again (VFIO revokes
    /// and un-revokes; the next commit maps the same import again).
    Decode,
}

#[derive(Parser, Debug)]
#[command(
    about = "Show BAR-backed framebuffers of a VFIO device through the stock virtio-gpu driver"
)]
struct Args {
    /// Page flips between the two framebuffers.
    #[arg(long, default_value_t = 300)]
    flips: u32,
    /// How long each shown state is held (ms), so that L1 samples the vmm in every phase.
    #[arg(long, default_value_t = 2500)]
    hold_ms: u64,
    /// How long to wait for the card node (ms).
    #[arg(long, default_value_t = 5000)]
    wait_card_ms: u64,
    /// How to revoke.
    #[arg(long, value_enum, default_value_t = Revoke::Close)]
    revoke: Revoke,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "stock-p2p")]
    scenario: String,
}

/// The program's arguments followed by those of `rig.p2p=ARG,ARG,...` on the kernel command line
/// (L2's init runs it without arguments).
fn args_with_cmdline() -> Vec<String> {
    let mut v: Vec<String> = std::env::args().collect();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for w in cmdline.split_whitespace() {
        if let Some(extra) = w.strip_prefix("rig.p2p=") {
            v.extend(extra.split(',').filter(|a| !a.is_empty()).map(String::from));
        }
    }
    v
}

/// `vendor_id`, `cpu family` and `model name` of the first CPU in /proc/cpuinfo.
fn cpu_facts() -> Vec<(&'static str, String)> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find(|l| l.split(':').next().is_some_and(|n| n.trim() == k))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "none".to_string(), |(_, v)| v.trim().to_string())
    };
    let family = get("cpu family");
    let hex = family
        .parse::<u32>()
        .map_or_else(|_| "none".to_string(), |f| format!("{f:#x}"));
    vec![
        ("cpu_vendor", get("vendor_id")),
        ("cpu_family", family),
        ("cpu_family_hex", hex),
        ("cpu_model", get("model")),
        ("cpu_name", get("model name")),
    ]
}

/// One `pci=` data line per device: the lspci-like line and the sysfs path up to the root
/// (`/sys/devices/pci0000:00/0000:00:03.0` -> `pci0000:00/0000:00:03.0`), i.e. the bridges above it.
fn report_topology(rep: &Reporter) -> usize {
    let Ok(dir) = std::fs::read_dir(SYSFS_PCI_DEVICES) else {
        return 0;
    };
    let mut paths: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut n = 0;
    for p in paths {
        let Ok(d) = PciDevice::open(&p) else { continue };
        let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        let up = real
            .to_string_lossy()
            .trim_start_matches("/sys/devices/")
            .to_string();
        rep.data(&[
            ("pci", d.bdf.clone()),
            ("class", format!("{:06x}", d.class)),
            ("ids", format!("{:04x}:{:04x}", d.vendor, d.device)),
            ("driver", d.driver().unwrap_or_else(|| "none".into())),
            ("path", up),
        ]);
        rep.log(&format!("lspci: {}", d.lspci_line().unwrap_or_default()));
        n += 1;
    }
    n
}

/// BAR2 through VFIO, with the device it came from (the mapping must go before the device fd).
struct Bar2 {
    map: Mapping,
    dev: VfioDevice,
}

fn open_bar(group: &VfioGroup, bdf: &str) -> Result<Bar2> {
    let dev = group.device(bdf)?;
    let map = dev.map_region(BAR)?;
    Ok(Bar2 { map, dev })
}

/// A framebuffer imported from a VFIO dma-buf.
struct Imported {
    _dmabuf: OwnedFd,
    handle: u32,
    fb: u32,
}

/// The outcome of one export + import.
enum Attempt {
    Done(Imported),
    /// VFIO refused the export (errno).
    ExportRefused(i32),
    /// The DRM driver refused the import (errno).
    ImportRefused(i32),
}

fn export_import(
    rep: &Reporter,
    card: &Card,
    bar: &Bar2,
    name: &str,
    pages: &[(u64, u64)],
) -> Result<Attempt> {
    let t0 = Instant::now();
    let dmabuf = match bar.dev.export_dma_buf(BAR, pages) {
        Ok(fd) => fd,
        Err(e) => {
            rep.data(&[
                ("fb", name.into()),
                ("export", "refused".into()),
                ("errno", e.to_string()),
            ]);
            return Ok(Attempt::ExportRefused(e));
        }
    };
    let (size, exp) = dmabuf_fdinfo(dmabuf.as_fd());
    rep.data(&[
        ("fb", name.into()),
        ("export", "ok".into()),
        ("ranges", pages.len().to_string()),
        (
            "dmabuf_size",
            size.map_or_else(|| "none".into(), |s| s.to_string()),
        ),
        ("exp_name", exp.unwrap_or_else(|| "none".into())),
    ]);
    let handle = match card.prime_fd_to_handle(dmabuf.as_fd()) {
        Ok(h) => h,
        Err(Error::Io { source, .. }) => {
            let errno = source.raw_os_error().unwrap_or(0);
            rep.data(&[
                ("fb", name.into()),
                ("import", "refused".into()),
                ("errno", errno.to_string()),
                ("error", source.to_string()),
            ]);
            return Ok(Attempt::ImportRefused(errno));
        }
        Err(e) => return Err(e),
    };
    let fb = card.add_fb2(WIDTH, HEIGHT, handle, WIDTH * 4)?;
    rep.data(&[
        ("fb", name.into()),
        ("import", "ok".into()),
        ("handle", handle.to_string()),
        ("fb_id", fb.to_string()),
        ("import_ms", t0.elapsed().as_millis().to_string()),
    ]);
    Ok(Attempt::Done(Imported {
        _dmabuf: dmabuf,
        handle,
        fb,
    }))
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let mut kmsg = KernelLog::open_at_end()?;
    let hold = Duration::from_millis(args.hold_ms);
    let phase = |p: &str| rep.data(&[("phase", p.to_string())]);

    phase("facts");
    let mut facts = cpu_facts();
    facts.push((
        "kernel",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
    ));
    rep.data(&facts);
    let devices = report_topology(rep);

    // ivshmem -> vfio-pci, noiommu group.
    let ivshmem = PciDevice::find(0x1af4, 0x1110)?;
    let group_no = bind_vfio_pci(&ivshmem, Duration::from_secs(5))?;
    let node = group_node(group_no)
        .ok_or_else(|| Error::Unsupported(format!("no /dev/vfio node of group {group_no}")))?;
    let iommu = if node.contains("noiommu") {
        VFIO_NOIOMMU_IOMMU
    } else {
        VFIO_TYPE1v2_IOMMU
    };
    let group = VfioGroup::open(&node, iommu)?;
    let bar = open_bar(&group, &ivshmem.bdf)?;
    let bar_info = ivshmem.bar(2)?;
    rep.data(&[
        ("ivshmem", ivshmem.bdf.clone()),
        ("vfio_group", node.clone()),
        ("iommu_type", iommu.to_string()),
        ("bar2_gpa", format!("{:#x}", bar_info.start)),
        ("bar2_size", format!("{:#x}", bar.map.len())),
        ("pci_devices", devices.to_string()),
    ]);

    // Paint the two framebuffers into scattered BAR2 pages.
    let image = u64::from(WIDTH) * u64::from(HEIGHT) * 4;
    let pages: Vec<Vec<(u64, u64)>> = P2P_FB_BASE
        .iter()
        .map(|&b| p2p_fb_pages(b, image))
        .collect();
    let t0 = Instant::now();
    paint_blob(&bar.map, &pages[0], 0, VARIANT_P2P_FRONT, WIDTH, image);
    paint_blob(&bar.map, &pages[1], 0, VARIANT_P2P_BACK, WIDTH, image);
    rep.data(&[
        ("fb_bytes", image.to_string()),
        ("pages", pages[0].len().to_string()),
        ("front_first", format_entries(&pages[0][..3])),
        ("back_first", format_entries(&pages[1][..3])),
        ("paint_ms", t0.elapsed().as_millis().to_string()),
    ]);

    // The card and its output.
    let (path, card) = find_virtio_gpu_card(Duration::from_millis(args.wait_card_ms))?;
    let blob = card.virtgpu_getparam(VIRTGPU_PARAM_RESOURCE_BLOB)?;
    let out = card.first_output(Some((WIDTH as u16, HEIGHT as u16)))?;
    rep.data(&[
        ("card", path.display().to_string()),
        ("param_resource_blob", blob.to_string()),
        ("connector", out.connector.to_string()),
        ("crtc", out.crtc.to_string()),
        ("mode", mode_name(&out.mode)),
    ]);

    // Import both.
    phase("import");
    let mut fbs = Vec::new();
    for (i, name) in ["front", "back"].iter().enumerate() {
        match export_import(rep, &card, &bar, name, &pages[i])? {
            Attempt::Done(f) => fbs.push(f),
            Attempt::ExportRefused(e) => {
                report_kernel(rep, &mut kmsg);
                rep.result(
                    false,
                    &[
                        ("reason", "export-refused".into()),
                        ("errno", e.to_string()),
                    ],
                );
                return Ok(false);
            }
            Attempt::ImportRefused(e) => {
                report_kernel(rep, &mut kmsg);
                rep.result(
                    false,
                    &[
                        ("reason", "import-refused".into()),
                        ("import", "refused".into()),
                        ("errno", e.to_string()),
                    ],
                );
                return Ok(false);
            }
        }
    }
    let clip = [ClipRect {
        x1: 0,
        y1: 0,
        x2: WIDTH as u16,
        y2: HEIGHT as u16,
    }];
    card.set_crtc(out.crtc, fbs[0].fb, out.connector, &out.mode)?;
    card.dirty_fb(fbs[0].fb, &clip)?;
    phase("shown-front");
    std::thread::sleep(hold);

    // Page flips.
    phase("flips");
    let t0 = Instant::now();
    let mut max = Duration::ZERO;
    for i in 0..args.flips {
        let f0 = Instant::now();
        let next = &fbs[((i + 1) % 2) as usize];
        card.page_flip(out.crtc, next.fb, u64::from(i))?;
        loop {
            if !card.wait_event(FLIP_TIMEOUT)? {
                // Facts for the test instead of a hang: which flip, and what the kernel said.
                rep.data(&[
                    ("flip_timeout", i.to_string()),
                    ("flip_timeout_ms", FLIP_TIMEOUT.as_millis().to_string()),
                ]);
                report_kernel(rep, &mut kmsg);
                rep.result(
                    false,
                    &[
                        ("reason", "flip-event-timeout".into()),
                        ("flip", i.to_string()),
                    ],
                );
                return Ok(false);
            }
            match card.read_flip_event()? {
                Some(ev) if ev.user_data == u64::from(i) => break,
                _ => continue,
            }
        }
        max = max.max(f0.elapsed());
    }
    let secs = t0.elapsed().as_secs_f64();
    let fps = if secs > 0.0 {
        f64::from(args.flips) / secs
    } else {
        0.0
    };
    rep.data(&[
        ("flips", args.flips.to_string()),
        ("flips_ms", format!("{:.0}", secs * 1000.0)),
        ("flips_per_s", format!("{fps:.1}")),
        ("flip_max_ms", format!("{:.3}", max.as_secs_f64() * 1000.0)),
        (
            "shown_after_flips",
            if args.flips.is_multiple_of(2) {
                "front"
            } else {
                "back"
            }
            .into(),
        ),
    ]);
    // Make sure the front framebuffer is on screen (an even count ends there anyway).
    if !args.flips.is_multiple_of(2) {
        card.page_flip(out.crtc, fbs[0].fb, u64::MAX)?;
        while card
            .read_flip_event()?
            .is_none_or(|e| e.user_data != u64::MAX)
        {}
    }
    card.dirty_fb(fbs[0].fb, &clip)?;
    phase("flipped");
    std::thread::sleep(hold);

    // Revoke.
    phase("revoke");
    let t0 = Instant::now();
    let mut bar = Some(bar);
    let mut command = None;
    match args.revoke {
        Revoke::Close => {
            // Unmap BAR2 and close the device fd.
            bar = None;
        }
        Revoke::Decode => {
            let dev = &bar.as_ref().expect("BAR2 is open").dev;
            let cmd = dev.command()?;
            dev.set_command(cmd & !PCI_COMMAND_MEMORY)?;
            command = Some(cmd);
            rep.data(&[
                ("command_before", format!("{cmd:#06x}")),
                ("command_revoked", format!("{:#06x}", dev.command()?)),
            ]);
        }
    }
    let revoke_ms = t0.elapsed().as_millis();
    rep.data(&[
        (
            "revoke",
            match args.revoke {
                Revoke::Close => "device-fd-closed",
                Revoke::Decode => "memory-decode-off",
            }
            .into(),
        ),
        ("revoke_ms", revoke_ms.to_string()),
    ]);
    let k = report_kernel(rep, &mut kmsg);
    phase("revoked");
    std::thread::sleep(hold);
    let dirty_after = match card.dirty_fb(fbs[0].fb, &clip) {
        Ok(()) => "ok".to_string(),
        Err(Error::Io { source, .. }) => format!("errno{}", source.raw_os_error().unwrap_or(0)),
        Err(e) => return Err(e),
    };
    std::thread::sleep(Duration::from_millis(500));
    let k2 = report_kernel(rep, &mut kmsg);
    rep.data(&[
        ("dirtyfb_after_revoke", dirty_after),
        (
            "device_errors_after_revoke",
            (k.device_errors + k2.device_errors).to_string(),
        ),
    ]);

    // Show the front pages again, painted with VARIANT_P2P_AGAIN.
    phase("again");
    let mut again = None;
    let shown_fb = match args.revoke {
        Revoke::Close => {
            // A new device fd, a new dma-buf, a new import.
            let b = open_bar(&group, &ivshmem.bdf)?;
            paint_blob(&b.map, &pages[0], 0, VARIANT_P2P_AGAIN, WIDTH, image);
            let f = match export_import(rep, &card, &b, "again", &pages[0])? {
                Attempt::Done(f) => f,
                Attempt::ExportRefused(e) | Attempt::ImportRefused(e) => {
                    report_kernel(rep, &mut kmsg);
                    rep.result(
                        false,
                        &[
                            ("reason", "reimport-refused".into()),
                            ("errno", e.to_string()),
                        ],
                    );
                    return Ok(false);
                }
            };
            bar = Some(b);
            card.set_crtc(out.crtc, f.fb, out.connector, &out.mode)?;
            let fb = f.fb;
            again = Some(f);
            fb
        }
        Revoke::Decode => {
            // Memory Space on again; the same import, shown by the next commit.
            let b = bar.as_ref().expect("BAR2 is open");
            b.dev.set_command(command.unwrap_or(PCI_COMMAND_MEMORY))?;
            paint_blob(&b.map, &pages[0], 0, VARIANT_P2P_AGAIN, WIDTH, image);
            rep.data(&[("command_restored", format!("{:#06x}", b.dev.command()?))]);
            fbs[0].fb
        }
    };
    card.dirty_fb(shown_fb, &clip)?;
    phase("shown-again");
    std::thread::sleep(hold);
    card.dirty_fb(shown_fb, &clip)?;
    std::thread::sleep(Duration::from_millis(300));
    let new_handle = again
        .as_ref()
        .map(|a| fbs.iter().all(|f| f.handle != a.handle));

    // Clean up: the framebuffers, then the GEM objects (the driver unrefs the resources).
    phase("cleanup");
    for f in fbs.iter().chain(again.iter()) {
        card.rm_fb(f.fb)?;
        card.gem_close(f.handle)?;
    }
    let imports = fbs.len() + again.iter().count();
    drop(fbs);
    drop(again);
    drop(bar);
    let k3 = report_kernel(rep, &mut kmsg);
    let errors = k.device_errors + k2.device_errors + k3.device_errors;
    rep.result(
        true,
        &[
            ("import", "ok".into()),
            (
                "revoke",
                args.revoke
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string()),
            ),
            ("flips", args.flips.to_string()),
            ("flips_per_s", format!("{fps:.1}")),
            ("imports", imports.to_string()),
            (
                "new_handle_after_revoke",
                new_handle.map_or_else(|| "none".into(), |b| b.to_string()),
            ),
            ("device_errors", errors.to_string()),
            ("width", WIDTH.to_string()),
            ("height", HEIGHT.to_string()),
            ("fb_bytes", image.to_string()),
        ],
    );
    Ok(true)
}

/// What the kernel logged since the last call.
struct Kernel {
    device_errors: usize,
}

/// Relays the new kernel lines that matter (p2pdma, vfio, virtio_gpu, drm, dma-buf) as `kernel:`
/// lines and counts the driver's device-error lines ("response 0x...").
fn report_kernel(rep: &Reporter, kmsg: &mut KernelLog) -> Kernel {
    let mut device_errors = 0;
    for l in kmsg.new_records() {
        let low = l.to_lowercase();
        if [
            "p2p",
            "peer-to-peer",
            "vfio",
            "virtio_gpu",
            "drm",
            "dma-buf",
            "dmabuf",
        ]
        .iter()
        .any(|k| low.contains(k))
        {
            rep.log(&format!("kernel: {l}"));
        }
        if l.contains("peer-to-peer") {
            rep.data(&[("kernel_p2pdma", l.clone())]);
        }
        if l.contains("response 0x") {
            device_errors += 1;
        }
    }
    Kernel { device_errors }
}

fn main() -> ExitCode {
    let args = Args::parse_from(args_with_cmdline());
    let rep = Reporter::new(&args.scenario);
    rep.finish(run(&args, &rep))
}
