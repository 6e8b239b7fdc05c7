//! gpu-user-blob: a user-space virtio-gpu driver that scans out blobs living in a passed-through
//! PCI BAR (issue 5, rig scenario "BAR blob", the seed's case).
//!
//! The `virtio-gpu` kernel module must not be loaded. The program:
//! 1. finds the virtio-gpu device (`--gpu-id`, default 1af4:1050), unbinds it from `virtio-pci`
//!    (with CONFIG_IO_STRICT_DEVMEM=y a claimed BAR cannot be mapped through sysfs), sets Memory
//!    Space + Bus Master + INTx-disable in its command register;
//! 2. parses the virtio-pci capabilities from sysfs `config`, maps the BAR(s) they name through
//!    `resourceN`, resets the device and negotiates VERSION_1 + RESOURCE_BLOB (ACCESS_PLATFORM too
//!    if offered: without a vIOMMU bus addresses are guest-physical);
//! 3. sets up the control queue in locked pages (guest-physical addresses from /proc/self/pagemap),
//!    no interrupts: every command's completion is polled from the used ring with a deadline;
//! 4. GET_DISPLAY_INFO;
//! 5. blob 1: writes pattern `VARIANT_BAR_BLOB` (see `guest_tools::pattern`) into the ivshmem
//!    BAR2 (`--ivshmem-id`, mapped through `resource2`) at the ranges of
//!    `pattern::bar_blob_entries(--bar-base, size, --entries, 4096)` - out of order, with holes - so
//!    that the blob read in entry order is the image; RESOURCE_CREATE_BLOB (blob_mem GUEST, entries
//!    = BAR2 guest-physical address + offset), SET_SCANOUT_BLOB (B8G8R8X8 = XRGB8888,
//!    `--width` x `--height`, stride width * 4), RESOURCE_FLUSH;
//! 6. blob 2: the first half of its pages in locked guest RAM (one entry per physically contiguous
//!    run), the rest contiguous in BAR2 at `--mixed-bar-offset`, pattern `VARIANT_MIXED_BLOB`;
//!    create, set as scanout, flush.
//!
//! Every response type is printed (`OK_NODATA` = 0x1100, `ERR_UNSPEC` = 0x1200, ...).
//! `--expect ok` (default) passes iff every command answers OK; `--expect scanout-error` passes iff
//! everything else answers OK and both SET_SCANOUT_BLOBs (and so the RESOURCE_FLUSHes after them)
//! answer an error - what Debian's QEMU 7.2 does for BAR pages (its udmabuf attempt fails and it has
//! no VFIO dma-buf path), so the driver can be proven against it.
//! Output: `RIG-DATA scenario=gpu-user-blob ...` lines, a final `RIG-RESULT`; exit 0 iff PASS.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use guest_tools::error::{Error, Result};
use guest_tools::pagemap::{merge_runs, LockedPages, Pagemap, PAGE_SIZE};
use guest_tools::pattern::{
    bar_blob_entries, bar_blob_span, blob_word, VARIANT_BAR_BLOB, VARIANT_MIXED_BLOB,
};
use guest_tools::pci::{
    parse_hex_u64, parse_id_pair, MmioRegion, PciDevice, PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY,
};
use guest_tools::report::{hex, Reporter};
use guest_tools::virtio_gpu_cmd::{self as cmd, Rect, ScanoutBlob};
use guest_tools::virtio_pci::VirtioPci;
use guest_tools::virtqueue::{Buf, SplitQueue};
use virtio_bindings::virtio_config::{VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1};

/// What the device is expected to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Expect {
    /// Every command answers OK (our VMM).
    Ok,
    /// SET_SCANOUT_BLOB answers an error, everything else OK (Debian's QEMU 7.2).
    ScanoutError,
}

#[derive(Parser, Debug)]
#[command(
    about = "User-space virtio-gpu driver: scan out blobs in a passthrough BAR (rig, issue 5)"
)]
struct Args {
    /// virtio-gpu PCI vendor:device.
    #[arg(long, default_value = "1af4:1050")]
    gpu_id: String,
    /// PCI vendor:device of the device whose BAR holds the blobs.
    #[arg(long, default_value = "1af4:1110")]
    ivshmem_id: String,
    /// BAR of that device.
    #[arg(long, default_value_t = 2)]
    ivshmem_bar: usize,
    /// Image width in pixels.
    #[arg(long, default_value_t = 256)]
    width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 192)]
    height: u32,
    /// Entries of the all-BAR blob (>= 4).
    #[arg(long, default_value_t = 6)]
    entries: usize,
    /// BAR offset where the all-BAR blob's ranges start.
    #[arg(long, default_value = "0x100000")]
    bar_base: String,
    /// BAR offset of the BAR part of the mixed (RAM + BAR) blob.
    #[arg(long, default_value = "0x800000")]
    mixed_bar_offset: String,
    /// Skip the mixed RAM + BAR blob.
    #[arg(long)]
    no_mixed: bool,
    /// Expected answers.
    #[arg(long, value_enum, default_value_t = Expect::Ok)]
    expect: Expect,
    /// Pause after each blob's flush (ms), so a rate-limited capture or an L0 screendump sees it.
    #[arg(long, default_value_t = 1000)]
    hold_ms: u64,
    /// Deadline per command (ms).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "gpu-user-blob")]
    scenario: String,
}

/// The control queue and one page each for a request and its response.
struct Driver<'a> {
    dev: VirtioPci,
    queue: SplitQueue,
    req: LockedPages,
    resp: LockedPages,
    req_phys: u64,
    resp_phys: u64,
    timeout: Duration,
    rep: &'a Reporter,
    /// (command name, response type) of every command sent.
    log: Vec<(String, u32)>,
}

impl Driver<'_> {
    /// Sends one command and returns the response bytes (at most `resp_len`).
    fn submit(&mut self, name: &str, req: &[u8], resp_len: usize) -> Result<Vec<u8>> {
        if req.len() > PAGE_SIZE || resp_len > PAGE_SIZE {
            return Err(Error::Unsupported(format!(
                "{name}: {} request bytes do not fit a page",
                req.len()
            )));
        }
        self.req.write_bytes(0, req);
        for i in 0..resp_len {
            self.resp.write_u8(i, 0);
        }
        self.queue.push(&[
            Buf {
                addr: self.req_phys,
                len: req.len() as u32,
                write: false,
            },
            Buf {
                addr: self.resp_phys,
                len: resp_len as u32,
                write: true,
            },
        ])?;
        self.dev.notify(0)?;
        let (id, used_len) = self.queue.wait_used(self.timeout)?;
        self.dev.read_isr();
        let mut out = vec![0u8; (used_len as usize).min(resp_len)];
        self.resp.read_bytes(0, &mut out);
        let t = cmd::resp_type(&out);
        self.rep.data(&[
            ("cmd", name.to_string()),
            ("resp", format!("{t:#06x}")),
            ("resp_name", cmd::resp_name(t).to_string()),
            ("used_id", id.to_string()),
            ("used_len", used_len.to_string()),
        ]);
        self.log.push((name.to_string(), t));
        Ok(out)
    }
}

/// Writes pattern `variant` for blob bytes `blob_off..blob_off + len` at BAR offset `bar_off`.
fn paint_bar(
    bar: &MmioRegion,
    bar_off: u64,
    len: u64,
    blob_off: u64,
    variant: u8,
    width: u32,
    image: u64,
) {
    for j in (0..len).step_by(4) {
        let b = blob_off + j;
        let w = if b < image {
            blob_word(variant, width, b)
        } else {
            0
        };
        bar.write_u32((bar_off + j) as usize, w);
    }
}

fn entries_text(e: &[(u64, u64)]) -> String {
    e.iter()
        .map(|(a, l)| format!("{a:#x}+{l:#x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates blob `res_id` from `entries` (guest-physical, length), sets it as scanout 0 and flushes.
fn show_blob(
    drv: &mut Driver,
    res_id: u32,
    entries: &[(u64, u64)],
    size: u64,
    width: u32,
    height: u32,
    hold: Duration,
) -> Result<()> {
    let ents: Vec<(u64, u32)> = entries.iter().map(|&(a, l)| (a, l as u32)).collect();
    let create = cmd::resource_create_blob(
        res_id,
        cmd::BLOB_MEM_GUEST,
        cmd::BLOB_FLAG_USE_MAPPABLE | cmd::BLOB_FLAG_USE_SHAREABLE,
        0,
        size,
        &ents,
    );
    drv.submit(
        &format!("RESOURCE_CREATE_BLOB/{res_id}"),
        &create,
        cmd::HDR_SIZE,
    )?;
    let rect = Rect::sized(width, height);
    let scanout = cmd::set_scanout_blob(&ScanoutBlob {
        scanout_id: 0,
        resource_id: res_id,
        rect,
        width,
        height,
        format: cmd::FORMAT_B8G8R8X8_UNORM,
        stride: width * 4,
        offset: 0,
    });
    drv.submit(
        &format!("SET_SCANOUT_BLOB/{res_id}"),
        &scanout,
        cmd::HDR_SIZE,
    )?;
    drv.submit(
        &format!("RESOURCE_FLUSH/{res_id}"),
        &cmd::resource_flush(res_id, rect),
        cmd::HDR_SIZE,
    )?;
    drv.rep.data(&[
        ("shown", res_id.to_string()),
        ("hold_ms", hold.as_millis().to_string()),
    ]);
    std::thread::sleep(hold);
    Ok(())
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let (gv, gd) = parse_id_pair(&args.gpu_id)?;
    let (iv, id) = parse_id_pair(&args.ivshmem_id)?;
    let bar_base = parse_hex_u64(&args.bar_base)?;
    let mixed_off = parse_hex_u64(&args.mixed_bar_offset)?;
    if args.entries < 4 {
        return Err(Error::Unsupported(format!(
            "--entries {} < 4",
            args.entries
        )));
    }
    if args.width < 16 || args.height < 16 || args.width > 4096 || args.height > 4096 {
        return Err(Error::Unsupported(
            "--width/--height must be 16..=4096".into(),
        ));
    }
    let image = u64::from(args.width) * u64::from(args.height) * 4;
    let size = image.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64;
    let hold = Duration::from_millis(args.hold_ms);

    // 1. The GPU, unbound from virtio-pci.
    let gpu = PciDevice::find(gv, gd)?;
    rep.log(&format!("lspci: {}", gpu.lspci_line()?));
    let unbound = gpu.unbind()?.unwrap_or_else(|| "none".into());
    let (c0, c1) = gpu.update_command(
        PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE,
        0,
        PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
    )?;
    // 2. Transport and features.
    let dev = VirtioPci::open(&gpu)?;
    let required = (1u64 << VIRTIO_F_VERSION_1) | (1u64 << cmd::F_RESOURCE_BLOB);
    let (offered, accepted) = dev.negotiate(required, 1u64 << VIRTIO_F_ACCESS_PLATFORM)?;
    rep.data(&[
        ("gpu_bdf", gpu.bdf.clone()),
        ("unbound_from", unbound),
        ("command", format!("{c0:#06x}->{c1:#06x}")),
        (
            "common_cfg",
            format!(
                "bar{}+{:#x}",
                dev.layout.common.bar, dev.layout.common.offset
            ),
        ),
        (
            "notify_cfg",
            format!(
                "bar{}+{:#x}",
                dev.layout.notify.bar, dev.layout.notify.offset
            ),
        ),
        ("features_offered", hex(offered)),
        ("features_accepted", hex(accepted)),
        ("num_queues", dev.num_queues().to_string()),
    ]);
    // 3. Control queue.
    let pm = Pagemap::open()?;
    let qsize = dev.queue_max_size(0).min(64);
    if qsize < 2 {
        return Err(Error::Unsupported(format!("control queue size {qsize}")));
    }
    let queue = SplitQueue::new(&pm, qsize)?;
    let (d, a, u) = queue.phys;
    dev.setup_queue(0, qsize, d, a, u)?;
    dev.driver_ok()?;
    rep.data(&[
        ("queue", "0".into()),
        ("size", qsize.to_string()),
        ("desc", hex(d)),
        ("avail", hex(a)),
        ("used", hex(u)),
        ("status", format!("{:#04x}", dev.status())),
    ]);
    let req = LockedPages::new(1)?;
    let resp = LockedPages::new(1)?;
    let (req_phys, resp_phys) = (req.phys(&pm, 0)?, resp.phys(&pm, 0)?);
    let mut drv = Driver {
        dev,
        queue,
        req,
        resp,
        req_phys,
        resp_phys,
        timeout: Duration::from_millis(args.timeout_ms),
        rep,
        log: Vec::new(),
    };

    // 4. Display info.
    let info = drv.submit(
        "GET_DISPLAY_INFO",
        &cmd::get_display_info(),
        cmd::DISPLAY_INFO_SIZE,
    )?;
    if let Some(d) = cmd::parse_display_info(&info) {
        rep.data(&[
            (
                "scanout0",
                format!(
                    "{}x{}+{}+{}",
                    d[0].rect.width, d[0].rect.height, d[0].rect.x, d[0].rect.y
                ),
            ),
            ("enabled", d[0].enabled.to_string()),
            (
                "scanouts_enabled",
                d.iter().filter(|s| s.enabled).count().to_string(),
            ),
        ]);
    }

    // 5. Blob 1: all in BAR2, out of order with holes.
    let ivdev = PciDevice::find(iv, id)?;
    let ivbar = ivdev.bar(args.ivshmem_bar)?;
    let bar = ivdev.map_bar(args.ivshmem_bar)?;
    let ents =
        bar_blob_entries(bar_base, size, args.entries, PAGE_SIZE as u64).ok_or_else(|| {
            Error::Unsupported(format!(
                "{size} bytes cannot be split into {} pages",
                args.entries
            ))
        })?;
    if bar_base + bar_blob_span(&ents, bar_base) > bar.len() as u64 {
        return Err(Error::Unsupported(format!(
            "blob ranges end past the {:#x}-byte BAR",
            bar.len()
        )));
    }
    let mut blob_off = 0;
    for &(off, len) in &ents {
        paint_bar(
            &bar,
            off,
            len,
            blob_off,
            VARIANT_BAR_BLOB,
            args.width,
            image,
        );
        blob_off += len;
    }
    let phys1: Vec<(u64, u64)> = ents.iter().map(|&(o, l)| (ivbar.start + o, l)).collect();
    rep.data(&[
        ("blob", "1".into()),
        ("variant", VARIANT_BAR_BLOB.to_string()),
        ("width", args.width.to_string()),
        ("height", args.height.to_string()),
        ("size", size.to_string()),
        ("bar_addr", hex(ivbar.start)),
        ("bar_entries", entries_text(&ents)),
        ("nr_entries", ents.len().to_string()),
    ]);
    show_blob(&mut drv, 1, &phys1, size, args.width, args.height, hold)?;

    // 6. Blob 2: first half of the pages in guest RAM, the rest in BAR2.
    let mut _ram = None;
    if !args.no_mixed {
        let pages = (size / PAGE_SIZE as u64) as usize;
        let ram_pages = (pages / 2).max(1);
        let ram = LockedPages::new(ram_pages)?;
        let ram_bytes = (ram_pages * PAGE_SIZE) as u64;
        for j in (0..ram_bytes).step_by(4) {
            let w = if j < image {
                blob_word(VARIANT_MIXED_BLOB, args.width, j)
            } else {
                0
            };
            ram.write_u32(j as usize, w);
        }
        let bar_len = size - ram_bytes;
        if mixed_off + bar_len > bar.len() as u64 {
            return Err(Error::Unsupported(
                "mixed blob's BAR part ends past the BAR".into(),
            ));
        }
        paint_bar(
            &bar,
            mixed_off,
            bar_len,
            ram_bytes,
            VARIANT_MIXED_BLOB,
            args.width,
            image,
        );
        let mut phys2 = merge_runs(&ram.phys_pages(&pm)?, PAGE_SIZE as u64);
        let ram_entries = phys2.len();
        phys2.push((ivbar.start + mixed_off, bar_len));
        rep.data(&[
            ("blob", "2".into()),
            ("variant", VARIANT_MIXED_BLOB.to_string()),
            ("size", size.to_string()),
            ("ram_bytes", ram_bytes.to_string()),
            ("ram_entries", ram_entries.to_string()),
            ("bar_entry", format!("{mixed_off:#x}+{bar_len:#x}")),
            ("entries", entries_text(&phys2)),
        ]);
        show_blob(&mut drv, 2, &phys2, size, args.width, args.height, hold)?;
        _ram = Some(ram); // keep the pages (and the scanout's memory) until exit
    }

    // Verdict.
    let is_ok = |t: u32| t == cmd::RESP_OK_NODATA || t == cmd::RESP_OK_DISPLAY_INFO;
    let mut bad = Vec::new();
    for (name, t) in &drv.log {
        // Without a scanout the following flush fails too (QEMU 7.2: ERR_INVALID_PARAMETER).
        let want_error = args.expect == Expect::ScanoutError
            && (name.starts_with("SET_SCANOUT_BLOB") || name.starts_with("RESOURCE_FLUSH"));
        let fine = if want_error {
            t >= &cmd::RESP_ERR_UNSPEC
        } else {
            is_ok(*t)
        };
        if !fine {
            bad.push(format!("{name}:{}", cmd::resp_name(*t)));
        }
    }
    let scanouts: Vec<String> = drv
        .log
        .iter()
        .filter(|(n, _)| n.starts_with("SET_SCANOUT_BLOB"))
        .map(|(_, t)| cmd::resp_name(*t).to_string())
        .collect();
    let pass = bad.is_empty();
    rep.result(
        pass,
        &[
            (
                "expect",
                args.expect
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string()),
            ),
            ("commands", drv.log.len().to_string()),
            (
                "unexpected",
                if bad.is_empty() {
                    "none".into()
                } else {
                    bad.join(",")
                },
            ),
            ("scanout_blob", scanouts.join(",")),
            ("blob_size", size.to_string()),
            ("width", args.width.to_string()),
            ("height", args.height.to_string()),
        ],
    );
    Ok(pass)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new(&args.scenario);
    rep.finish(run(&args, &rep))
}
