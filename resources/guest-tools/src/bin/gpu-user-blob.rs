//! gpu-user-blob: a user-space virtio-gpu driver that scans out blobs living in a passed-through
//! PCI BAR (rig scenario gpu-bar-blob).
//!
//! The `virtio-gpu` kernel module must not be loaded. The program (steps 1-3 are
//! `guest_tools::gpu_ctl::GpuCtl::open`):
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
use guest_tools::gpu_ctl::GpuCtl;
use guest_tools::hold::{hold_until, HOLD_POLL};
use guest_tools::pagemap::{merge_runs, LockedPages, Pagemap, PAGE_SIZE};
use guest_tools::pattern::{
    format_entries, paint_bar_blob, paint_blob, VARIANT_BAR_BLOB, VARIANT_MIXED_BLOB,
};
use guest_tools::pci::{parse_hex_u64, parse_id_pair, PciDevice};
use guest_tools::report::{hex, Reporter};
use guest_tools::virtio_gpu_cmd as cmd;

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
    about = "User-space virtio-gpu driver: scan out blobs in a passthrough BAR (rig scenario gpu-bar-blob)"
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
    /// Pause after each blob's flush (ms), so a rate-limited capture or an L0 screendump sees it;
    /// with `--hold-until`, the longest pause.
    #[arg(long, default_value_t = 1000)]
    hold_ms: u64,
    /// End each pause as soon as this path exists (polled every 50 ms); the path of blob 2's
    /// pause is this path with `.2` appended.
    #[arg(long)]
    hold_until: Option<std::path::PathBuf>,
    /// Deadline per command (ms).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "gpu-user-blob")]
    scenario: String,
}

/// Creates blob `res_id` from `entries` (guest-physical, length), sets it as scanout 0, flushes
/// and holds the picture for `hold`.
fn show_blob(
    drv: &mut GpuCtl,
    res_id: u32,
    entries: &[(u64, u64)],
    size: u64,
    (width, height): (u32, u32),
    hold: Duration,
    until: Option<&std::path::Path>,
) -> Result<()> {
    drv.show_blob(res_id, entries, size, width, height)?;
    drv.reporter().data(&[
        ("shown", res_id.to_string()),
        ("hold_ms", hold.as_millis().to_string()),
    ]);
    match until {
        None => std::thread::sleep(hold),
        Some(p) => {
            let (held, end) = hold_until(p, hold, HOLD_POLL);
            drv.reporter().data(&[
                ("held_ms", held.as_millis().to_string()),
                ("hold_end", end.word().into()),
            ]);
        }
    }
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

    // 1.-3. The GPU unbound from virtio-pci, features, control queue.
    let mut drv = GpuCtl::open(gv, gd, 64, Duration::from_millis(args.timeout_ms), rep)?;
    let pm = Pagemap::open()?;

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
    let ents = paint_bar_blob(
        &bar,
        bar_base,
        size,
        args.entries,
        VARIANT_BAR_BLOB,
        args.width,
        image,
    )?;
    let phys1: Vec<(u64, u64)> = ents.iter().map(|&(o, l)| (ivbar.start + o, l)).collect();
    rep.data(&[
        ("blob", "1".into()),
        ("variant", VARIANT_BAR_BLOB.to_string()),
        ("width", args.width.to_string()),
        ("height", args.height.to_string()),
        ("size", size.to_string()),
        ("bar_addr", hex(ivbar.start)),
        ("bar_entries", format_entries(&ents)),
        ("nr_entries", ents.len().to_string()),
    ]);
    let size_wh = (args.width, args.height);
    show_blob(
        &mut drv,
        1,
        &phys1,
        size,
        size_wh,
        hold,
        args.hold_until.as_deref(),
    )?;

    // 6. Blob 2: first half of the pages in guest RAM, the rest in BAR2.
    let mut _ram = None;
    if !args.no_mixed {
        let pages = (size / PAGE_SIZE as u64) as usize;
        let ram_pages = (pages / 2).max(1);
        let ram = LockedPages::new(ram_pages)?;
        let ram_bytes = (ram_pages * PAGE_SIZE) as u64;
        paint_blob(
            &ram,
            &[(0, ram_bytes)],
            0,
            VARIANT_MIXED_BLOB,
            args.width,
            image,
        );
        let bar_len = size - ram_bytes;
        if mixed_off + bar_len > bar.len() as u64 {
            return Err(Error::Unsupported(
                "mixed blob's BAR part ends past the BAR".into(),
            ));
        }
        paint_blob(
            &bar,
            &[(mixed_off, bar_len)],
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
            ("entries", format_entries(&phys2)),
        ]);
        let until2 = args.hold_until.as_ref().map(|p| {
            let mut s = p.clone().into_os_string();
            s.push(".2");
            std::path::PathBuf::from(s)
        });
        show_blob(&mut drv, 2, &phys2, size, size_wh, hold, until2.as_deref())?;
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
