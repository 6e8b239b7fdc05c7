//! gpu-hostile: a hostile user-space virtio-gpu driver (rig scenario gpu-hostile). It drives the
//! control queue with `guest_tools::gpu_ctl` (the `virtio-gpu` kernel module must not be loaded)
//! and attacks the device in five phases, sending many requests per queue notification:
//! 1. `vma-bomb`: blobs of `--vma-entries` one-page entries, all in the ivshmem BAR2, on
//!    non-adjacent pages (so no two entries merge into one range; pages repeat), created until the
//!    device refuses one or `--vma-blobs` exist;
//! 2. `fd-bomb`: `--fd-blobs` one-page blobs, alternately in BAR2 and in one page of guest RAM;
//! 3. `log-flood`: `--bad-unrefs` RESOURCE_UNREFs of resource ids that do not exist;
//! 4. `capture-flood`: a 64x64 guest-RAM blob set as scanout 0, then `--flushes` RESOURCE_FLUSHes
//!    in 10 rounds over about a second;
//! 5. `decode-off`: a 64x64 BAR2 blob set as scanout 0 and flushed; then the Memory Space bit of
//!    the ivshmem device's command register is cleared through sysfs `config` (the device has no
//!    driver in this guest), the scanout flushed `--off-flushes` times, the bit set again and the
//!    scanout flushed once more.
//!
//! The attack commands may be answered with errors. Everything else must answer OK: the setup of
//! a phase (create, scanout, first flush), the RESOURCE_UNREF of each resource the phase created
//! (OK_NODATA) and the GET_DISPLAY_INFO after each phase (OK_DISPLAY_INFO). Every command must be
//! answered within `--timeout-ms` of its group's notification; after a lost response nothing more
//! is sent.
//!
//! Finally a fresh image: pattern `VARIANT_HOSTILE_FRESH` (`guest_tools::pattern`) painted into
//! BAR2 at `pattern::bar_blob_entries(--bar-base, size, --entries, 4096)` (out of order, with
//! holes), created as a new blob, set as scanout 0 and flushed; it stays shown.
//!
//! Output: one `RIG-DATA scenario=gpu-hostile phase=<name> status=PASS|FAIL ...` line per phase:
//! `sent` (attack commands), `answered`, `resp` (`NAME:count,...` of the attack responses),
//! `lost`, `unsent`, `notifies`, `setup` (response names), `setup_bad`, `unref_sent`,
//! `unref_ok`, `unref_bad`, `display_info`, `ms` and the phase's own fields; a `blob=fresh` line
//! with the image's BAR entries; a final `RIG-RESULT` (PASS iff every phase passed and the fresh
//! image's three commands answered OK_NODATA); exit 0 iff PASS.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use guest_tools::error::{Error, Result};
use guest_tools::gpu_ctl::{create_blob_request, scanout_request, GpuCtl, REQUEST_ARENA};
use guest_tools::pagemap::{merge_runs, LockedPages, Pagemap, PAGE_SIZE};
use guest_tools::pattern::{
    format_entries, paint_bar_blob, paint_blob, VARIANT_BAR_BLOB, VARIANT_HOSTILE_FRESH,
    VARIANT_KMS,
};
use guest_tools::pci::{parse_hex_u64, parse_id_pair, PciDevice, PCI_COMMAND, PCI_COMMAND_MEMORY};
use guest_tools::report::{hex, Reporter};
use guest_tools::virtio_gpu_cmd::{self as cmd, Rect};

/// First resource id of the vma-bomb blobs.
const VMA_ID0: u32 = 0x1000;
/// First resource id of the fd-bomb blobs.
const FD_ID0: u32 = 0x2000;
/// Resource id of the capture-flood blob.
const CAPTURE_ID: u32 = 0x8000;
/// Resource id of the decode-off blob.
const DECODE_ID: u32 = 0x8001;
/// Resource id of the fresh image.
const FRESH_ID: u32 = 0x8002;
/// First of the resource ids that log-flood unrefs (none exists).
const BAD_ID0: u32 = 0x4000_0000;
/// Rounds of the capture flood, and the pause after each.
const FLOOD_ROUNDS: usize = 10;
const FLOOD_PAUSE: std::time::Duration = std::time::Duration::from_millis(120);

/// Size of the capture-flood and decode-off images.
const SMALL: u32 = 64;

#[derive(Parser, Debug)]
#[command(
    about = "Hostile user-space virtio-gpu driver: resource, log and capture floods, \
                   a BAR that stops decoding (rig scenario gpu-hostile)"
)]
struct Args {
    /// virtio-gpu PCI vendor:device.
    #[arg(long, default_value = "1af4:1050")]
    gpu_id: String,
    /// PCI vendor:device of the passed-through device whose BAR holds blobs.
    #[arg(long, default_value = "1af4:1110")]
    ivshmem_id: String,
    /// BAR of that device.
    #[arg(long, default_value_t = 2)]
    ivshmem_bar: usize,
    /// Entries of each vma-bomb blob.
    #[arg(long, default_value_t = 15000)]
    vma_entries: usize,
    /// Most vma-bomb blobs.
    #[arg(long, default_value_t = 16)]
    vma_blobs: usize,
    /// fd-bomb blobs.
    #[arg(long, default_value_t = 1100)]
    fd_blobs: usize,
    /// log-flood RESOURCE_UNREFs.
    #[arg(long, default_value_t = 10000)]
    bad_unrefs: usize,
    /// capture-flood RESOURCE_FLUSHes.
    #[arg(long, default_value_t = 2000)]
    flushes: usize,
    /// decode-off flushes while the BAR does not decode.
    #[arg(long, default_value_t = 3)]
    off_flushes: usize,
    /// BAR offset of the decode-off blob.
    #[arg(long, default_value = "0x800000")]
    decode_bar_offset: String,
    /// Fresh image width in pixels.
    #[arg(long, default_value_t = 256)]
    width: u32,
    /// Fresh image height in pixels.
    #[arg(long, default_value_t = 192)]
    height: u32,
    /// Entries of the fresh image's blob (>= 4).
    #[arg(long, default_value_t = 6)]
    entries: usize,
    /// BAR offset where the fresh image's ranges start.
    #[arg(long, default_value = "0x100000")]
    bar_base: String,
    /// Pause after the fresh image's flush (ms), so a rate-limited capture writes it.
    #[arg(long, default_value_t = 1000)]
    hold_ms: u64,
    /// Deadline for the responses of one group of requests (one notification), ms.
    #[arg(long, default_value_t = 30000)]
    timeout_ms: u64,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "gpu-hostile")]
    scenario: String,
}

/// Page numbers for `count` one-page entries in a BAR of `pages` pages: `(2 * i + shift) mod
/// pages`. Consecutive entries are never on adjacent pages (so they cannot merge into one range)
/// and pages repeat once the BAR is used up. `pages` must be even and at least 4.
fn scattered_pages(count: usize, pages: u64, shift: u64) -> Vec<u64> {
    (0..count as u64).map(|i| (2 * i + shift) % pages).collect()
}

/// `NAME:count,...` of response types.
fn counts_text(counts: &BTreeMap<u32, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(t, n)| format!("{}:{n}", cmd::resp_name(*t)))
        .collect::<Vec<_>>()
        .join(",")
}

fn names_text(types: &[u32]) -> String {
    if types.is_empty() {
        return "none".into();
    }
    types
        .iter()
        .map(|t| cmd::resp_name(*t))
        .collect::<Vec<_>>()
        .join(",")
}

/// What one phase sent and got.
struct Phase {
    name: &'static str,
    started: Instant,
    sent: usize,
    answered: usize,
    resp: BTreeMap<u32, usize>,
    lost: usize,
    unsent: usize,
    notifies: u32,
    setup: Vec<u32>,
    unref_sent: usize,
    unref_ok: usize,
    unref_bad: BTreeMap<u32, usize>,
    display_info: Option<u32>,
    fields: Vec<(&'static str, String)>,
}

impl Phase {
    fn new(name: &'static str) -> Self {
        Phase {
            name,
            started: Instant::now(),
            sent: 0,
            answered: 0,
            resp: BTreeMap::new(),
            lost: 0,
            unsent: 0,
            notifies: 0,
            setup: Vec::new(),
            unref_sent: 0,
            unref_ok: 0,
            unref_bad: BTreeMap::new(),
            display_info: None,
            fields: Vec::new(),
        }
    }

    fn setup_bad(&self) -> usize {
        self.setup
            .iter()
            .filter(|&&t| t != cmd::RESP_OK_NODATA)
            .count()
    }

    fn passed(&self) -> bool {
        self.lost == 0
            && self.unsent == 0
            && self.setup_bad() == 0
            && self.unref_bad.is_empty()
            && self.display_info == Some(cmd::RESP_OK_DISPLAY_INFO)
    }
}

struct Hostile<'a> {
    drv: GpuCtl<'a>,
    rep: &'a Reporter,
}

impl Hostile<'_> {
    /// Sends `reqs` (answered with a header each) and counts them in `ph`; returns each
    /// request's response type (None: lost or not sent).
    fn send(&mut self, ph: &mut Phase, reqs: &[Vec<u8>]) -> Result<Vec<Option<u32>>> {
        let out = self.drv.batch(reqs, cmd::HDR_SIZE)?;
        ph.lost += out.lost;
        ph.unsent += out.unsent;
        ph.notifies += out.notifies;
        Ok(out
            .responses
            .iter()
            .map(|r| r.as_ref().map(|u| u.resp_type()))
            .collect())
    }

    /// Attack commands: any answer counts.
    fn attack(&mut self, ph: &mut Phase, reqs: &[Vec<u8>]) -> Result<Vec<Option<u32>>> {
        let types = self.send(ph, reqs)?;
        ph.sent += reqs.len();
        for t in types.iter().flatten() {
            ph.answered += 1;
            *ph.resp.entry(*t).or_default() += 1;
        }
        Ok(types)
    }

    /// An ordinary command of the phase: must answer OK_NODATA.
    fn setup(&mut self, ph: &mut Phase, req: Vec<u8>) -> Result<bool> {
        let t = self.send(ph, &[req])?.into_iter().next().flatten();
        if let Some(t) = t {
            ph.setup.push(t);
        }
        Ok(t == Some(cmd::RESP_OK_NODATA))
    }

    /// RESOURCE_UNREF of what the phase created (each must answer OK_NODATA), then
    /// GET_DISPLAY_INFO; prints the phase's line. Returns whether the phase passed.
    fn finish(&mut self, mut ph: Phase, created: &[u32]) -> Result<bool> {
        if !created.is_empty() {
            let unrefs: Vec<Vec<u8>> = created.iter().map(|&id| cmd::resource_unref(id)).collect();
            ph.unref_sent = unrefs.len();
            for t in self.send(&mut ph, &unrefs)?.into_iter().flatten() {
                if t == cmd::RESP_OK_NODATA {
                    ph.unref_ok += 1;
                } else {
                    *ph.unref_bad.entry(t).or_default() += 1;
                }
            }
        }
        let info = self
            .drv
            .batch(&[cmd::get_display_info()], cmd::DISPLAY_INFO_SIZE)?;
        ph.lost += info.lost;
        ph.unsent += info.unsent;
        ph.notifies += info.notifies;
        ph.display_info = info.responses[0].as_ref().map(|u| u.resp_type());
        let pass = ph.passed();
        let mut f: Vec<(&str, String)> = vec![
            ("phase", ph.name.to_string()),
            ("status", if pass { "PASS" } else { "FAIL" }.to_string()),
            ("sent", ph.sent.to_string()),
            ("answered", ph.answered.to_string()),
            ("resp", counts_text(&ph.resp)),
            ("lost", ph.lost.to_string()),
            ("unsent", ph.unsent.to_string()),
            ("notifies", ph.notifies.to_string()),
            ("setup", names_text(&ph.setup)),
            ("setup_bad", ph.setup_bad().to_string()),
            ("unref_sent", ph.unref_sent.to_string()),
            ("unref_ok", ph.unref_ok.to_string()),
            (
                "unref_bad",
                ph.unref_bad.values().sum::<usize>().to_string(),
            ),
            ("unref_bad_resp", counts_text(&ph.unref_bad)),
            (
                "display_info",
                ph.display_info.map_or("none", cmd::resp_name).to_string(),
            ),
            ("ms", ph.started.elapsed().as_millis().to_string()),
        ];
        f.append(&mut ph.fields);
        self.rep.data(&f);
        Ok(pass)
    }
}

/// The ids of `ids` whose response was OK_NODATA.
fn created_ids(ids: &[u32], types: &[Option<u32>]) -> Vec<u32> {
    ids.iter()
        .zip(types)
        .filter(|(_, t)| **t == Some(cmd::RESP_OK_NODATA))
        .map(|(id, _)| *id)
        .collect()
}

/// Phase 1: vma-bomb.
fn vma_bomb(h: &mut Hostile, args: &Args, bar_start: u64, bar_pages: u64) -> Result<bool> {
    let mut ph = Phase::new("vma-bomb");
    let size = (args.vma_entries * PAGE_SIZE) as u64;
    let req_len = create_blob_request(0, &[], 0).len() + args.vma_entries * 16;
    let per_group = (REQUEST_ARENA / req_len.next_multiple_of(64)).max(1);
    let mut created = Vec::new();
    let mut refused = None;
    let mut made = 0;
    while made < args.vma_blobs && refused.is_none() && !h.drv.is_broken() {
        let n = per_group.min(args.vma_blobs - made);
        let ids: Vec<u32> = (made..made + n).map(|b| VMA_ID0 + b as u32).collect();
        let reqs: Vec<Vec<u8>> = ids
            .iter()
            .enumerate()
            .map(|(k, &id)| {
                let entries: Vec<(u64, u64)> =
                    scattered_pages(args.vma_entries, bar_pages, (made + k) as u64)
                        .into_iter()
                        .map(|p| (bar_start + p * PAGE_SIZE as u64, PAGE_SIZE as u64))
                        .collect();
                create_blob_request(id, &entries, size)
            })
            .collect();
        let types = h.attack(&mut ph, &reqs)?;
        created.extend(created_ids(&ids, &types));
        refused = types
            .iter()
            .flatten()
            .copied()
            .find(|&t| t != cmd::RESP_OK_NODATA);
        made += n;
    }
    ph.fields = vec![
        ("entries", args.vma_entries.to_string()),
        ("blob_bytes", size.to_string()),
        ("created", created.len().to_string()),
        (
            "refused_with",
            refused.map_or("none", cmd::resp_name).to_string(),
        ),
    ];
    h.finish(ph, &created)
}

/// Phase 2: fd-bomb.
fn fd_bomb(
    h: &mut Hostile,
    args: &Args,
    pm: &Pagemap,
    bar_start: u64,
    bar_pages: u64,
) -> Result<bool> {
    let mut ph = Phase::new("fd-bomb");
    let ram = LockedPages::new(1)?;
    let ram_page = ram.phys(pm, 0)?;
    let pages = scattered_pages(args.fd_blobs, bar_pages, 1);
    let ids: Vec<u32> = (0..args.fd_blobs).map(|i| FD_ID0 + i as u32).collect();
    let reqs: Vec<Vec<u8>> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let addr = if i % 2 == 0 {
                bar_start + pages[i] * PAGE_SIZE as u64
            } else {
                ram_page
            };
            create_blob_request(id, &[(addr, PAGE_SIZE as u64)], PAGE_SIZE as u64)
        })
        .collect();
    let types = h.attack(&mut ph, &reqs)?;
    let created = created_ids(&ids, &types);
    ph.fields = vec![
        ("bar_blobs", args.fd_blobs.div_ceil(2).to_string()),
        ("ram_blobs", (args.fd_blobs / 2).to_string()),
        ("created", created.len().to_string()),
    ];
    let pass = h.finish(ph, &created)?;
    drop(ram); // the RAM page outlives every blob on it
    Ok(pass)
}

/// Phase 3: log-flood.
fn log_flood(h: &mut Hostile, args: &Args) -> Result<bool> {
    let mut ph = Phase::new("log-flood");
    let reqs: Vec<Vec<u8>> = (0..args.bad_unrefs)
        .map(|i| cmd::resource_unref(BAD_ID0 + i as u32))
        .collect();
    h.attack(&mut ph, &reqs)?;
    ph.fields = vec![("first_id", hex(u64::from(BAD_ID0)))];
    h.finish(ph, &[])
}

/// Phase 4: capture-flood.
fn capture_flood(h: &mut Hostile, args: &Args, pm: &Pagemap) -> Result<bool> {
    let mut ph = Phase::new("capture-flood");
    let image = u64::from(SMALL * SMALL * 4);
    let ram = LockedPages::new(image as usize / PAGE_SIZE)?;
    paint_blob(&ram, &[(0, image)], 0, VARIANT_KMS, SMALL, image);
    let entries = merge_runs(&ram.phys_pages(pm)?, PAGE_SIZE as u64);
    let rect = Rect::sized(SMALL, SMALL);
    let mut created = Vec::new();
    let mut flood_ms = 0;
    if h.setup(&mut ph, create_blob_request(CAPTURE_ID, &entries, image))? {
        created.push(CAPTURE_ID);
        if h.setup(&mut ph, scanout_request(CAPTURE_ID, SMALL, SMALL))?
            && h.setup(&mut ph, cmd::resource_flush(CAPTURE_ID, rect))?
        {
            let flushes = vec![cmd::resource_flush(CAPTURE_ID, rect); args.flushes];
            let t0 = Instant::now();
            // In rounds spread over about a second, so that the capture display's rate limit
            // lets several frames through and its `keep=N` bound is what limits the files.
            for round in flushes.chunks(args.flushes.div_ceil(FLOOD_ROUNDS).max(1)) {
                h.attack(&mut ph, round)?;
                std::thread::sleep(FLOOD_PAUSE);
            }
            flood_ms = t0.elapsed().as_millis();
        }
    }
    ph.fields = vec![
        ("width", SMALL.to_string()),
        ("height", SMALL.to_string()),
        ("ram_entries", entries.len().to_string()),
        ("flood_ms", flood_ms.to_string()),
    ];
    let pass = h.finish(ph, &created)?;
    drop(ram);
    Ok(pass)
}

/// Phase 5: decode-off.
fn decode_off(
    h: &mut Hostile,
    args: &Args,
    ivdev: &PciDevice,
    bar: &guest_tools::pci::MmioRegion,
    bar_start: u64,
) -> Result<bool> {
    let mut ph = Phase::new("decode-off");
    let off = parse_hex_u64(&args.decode_bar_offset)?;
    let image = u64::from(SMALL * SMALL * 4);
    if off + image > bar.len() as u64 {
        return Err(Error::Unsupported(format!(
            "--decode-bar-offset {off:#x}: the blob ends past the {:#x}-byte BAR",
            bar.len()
        )));
    }
    paint_blob(bar, &[(off, image)], 0, VARIANT_BAR_BLOB, SMALL, image);
    let rect = Rect::sized(SMALL, SMALL);
    let before = ivdev.config_read_u16(PCI_COMMAND)?;
    let mut created = Vec::new();
    let (mut off_cmd, mut on_cmd) = (None, None);
    let (mut off_resp, mut on_resp) = (Vec::new(), Vec::new());
    if h.setup(
        &mut ph,
        create_blob_request(DECODE_ID, &[(bar_start + off, image)], image),
    )? {
        created.push(DECODE_ID);
        if h.setup(&mut ph, scanout_request(DECODE_ID, SMALL, SMALL))?
            && h.setup(&mut ph, cmd::resource_flush(DECODE_ID, rect))?
        {
            // Memory Space off; the BAR mapping of this program is not touched until it is on.
            let (_, c) = ivdev.update_command(0, PCI_COMMAND_MEMORY, 0)?;
            off_cmd = Some(c);
            let flushes = vec![cmd::resource_flush(DECODE_ID, rect); args.off_flushes];
            let sent = h.attack(&mut ph, &flushes);
            let (_, c) = ivdev.update_command(PCI_COMMAND_MEMORY, 0, PCI_COMMAND_MEMORY)?;
            on_cmd = Some(c);
            off_resp = sent?;
            if !h.drv.is_broken() {
                on_resp = h.attack(&mut ph, &[cmd::resource_flush(DECODE_ID, rect)])?;
            }
        }
    }
    let opt_names = |v: &[Option<u32>]| {
        let t: Vec<u32> = v.iter().map(|t| t.unwrap_or(0)).collect();
        names_text(&t)
    };
    let cmd_text = |c: Option<u16>| c.map_or("none".to_string(), |c| format!("{c:#06x}"));
    ph.fields = vec![
        ("command_before", format!("{before:#06x}")),
        ("command_off", cmd_text(off_cmd)),
        ("command_on", cmd_text(on_cmd)),
        ("off_flushes", opt_names(&off_resp)),
        ("on_flush", opt_names(&on_resp)),
        ("bar_offset", hex(off)),
    ];
    h.finish(ph, &created)
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let (gv, gd) = parse_id_pair(&args.gpu_id)?;
    let (iv, id) = parse_id_pair(&args.ivshmem_id)?;
    let bar_base = parse_hex_u64(&args.bar_base)?;
    if args.entries < 4 || args.vma_entries == 0 {
        return Err(Error::Unsupported(
            "--entries must be >= 4 and --vma-entries >= 1".into(),
        ));
    }
    if args.width < 16 || args.height < 16 || args.width > 4096 || args.height > 4096 {
        return Err(Error::Unsupported(
            "--width/--height must be 16..=4096".into(),
        ));
    }
    let t0 = Instant::now();
    let drv = GpuCtl::open(gv, gd, 256, Duration::from_millis(args.timeout_ms), rep)?;
    let pm = Pagemap::open()?;
    let ivdev = PciDevice::find(iv, id)?;
    let ivbar = ivdev.bar(args.ivshmem_bar)?;
    let bar = ivdev.map_bar(args.ivshmem_bar)?;
    let bar_pages = bar.len() as u64 / PAGE_SIZE as u64;
    if bar_pages < 4 || !bar_pages.is_multiple_of(2) {
        return Err(Error::Unsupported(format!(
            "BAR{} has {bar_pages} pages",
            args.ivshmem_bar
        )));
    }
    rep.data(&[
        ("ivshmem_bdf", ivdev.bdf.clone()),
        ("bar_addr", hex(ivbar.start)),
        ("bar_pages", bar_pages.to_string()),
        (
            "command",
            format!("{:#06x}", ivdev.config_read_u16(PCI_COMMAND)?),
        ),
    ]);
    let mut h = Hostile { drv, rep };

    let mut phases: Vec<(&str, bool)> = Vec::new();
    let steps: [&str; 5] = [
        "vma-bomb",
        "fd-bomb",
        "log-flood",
        "capture-flood",
        "decode-off",
    ];
    for name in steps {
        let pass = match name {
            "vma-bomb" => vma_bomb(&mut h, args, ivbar.start, bar_pages)?,
            "fd-bomb" => fd_bomb(&mut h, args, &pm, ivbar.start, bar_pages)?,
            "log-flood" => log_flood(&mut h, args)?,
            "capture-flood" => capture_flood(&mut h, args, &pm)?,
            _ => decode_off(&mut h, args, &ivdev, &bar, ivbar.start)?,
        };
        phases.push((name, pass));
        if h.drv.is_broken() {
            break;
        }
    }
    let failed: Vec<&str> = phases.iter().filter(|p| !p.1).map(|p| p.0).collect();

    // The fresh image: a new blob in BAR2, out-of-order ranges with holes.
    let image = u64::from(args.width) * u64::from(args.height) * 4;
    let size = image.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64;
    let mut fresh = Vec::new();
    if !h.drv.is_broken() {
        let ents = paint_bar_blob(
            &bar,
            bar_base,
            size,
            args.entries,
            VARIANT_HOSTILE_FRESH,
            args.width,
            image,
        )?;
        let phys: Vec<(u64, u64)> = ents.iter().map(|&(o, l)| (ivbar.start + o, l)).collect();
        rep.data(&[
            ("blob", "fresh".into()),
            ("resource_id", FRESH_ID.to_string()),
            ("variant", VARIANT_HOSTILE_FRESH.to_string()),
            ("width", args.width.to_string()),
            ("height", args.height.to_string()),
            ("size", size.to_string()),
            ("bar_addr", hex(ivbar.start)),
            ("bar_entries", format_entries(&ents)),
        ]);
        fresh = h
            .drv
            .show_blob(FRESH_ID, &phys, size, args.width, args.height)?
            .to_vec();
        std::thread::sleep(Duration::from_millis(args.hold_ms));
    }
    let fresh_ok = fresh.len() == 3 && fresh.iter().all(|&t| t == cmd::RESP_OK_NODATA);
    let pass = failed.is_empty() && phases.len() == steps.len() && fresh_ok;
    let mut f = vec![
        ("phases", phases.len().to_string()),
        (
            "phases_failed",
            if failed.is_empty() {
                "none".into()
            } else {
                failed.join(",")
            },
        ),
        ("fresh", names_text(&fresh)),
        ("width", args.width.to_string()),
        ("height", args.height.to_string()),
        ("blob_size", size.to_string()),
        ("total_ms", t0.elapsed().as_millis().to_string()),
    ];
    if h.drv.is_broken() {
        f.insert(0, ("reason", "lost-response".into()));
    }
    rep.result(pass, &f);
    Ok(pass)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new(&args.scenario);
    rep.finish(run(&args, &rep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scattered_pages_never_touch_their_neighbour_and_stay_in_the_bar() {
        for shift in [0, 1, 2, 7] {
            let p = scattered_pages(15000, 4096, shift);
            assert_eq!(p.len(), 15000);
            assert!(p.iter().all(|&x| x < 4096));
            for w in p.windows(2) {
                assert!(
                    w[1] != w[0] + 1 && w[0] != w[1] + 1 && w[0] != w[1],
                    "shift {shift}: pages {} and {} would merge",
                    w[0],
                    w[1]
                );
            }
        }
        // Pages repeat once the BAR is used up.
        let p = scattered_pages(4096, 4096, 0);
        assert_eq!(p[0], p[2048]);
    }

    #[test]
    fn response_counts_are_one_word() {
        let mut c = BTreeMap::new();
        assert_eq!(counts_text(&c), "none");
        c.insert(cmd::RESP_OK_NODATA, 3);
        c.insert(0x1203, 2);
        assert_eq!(counts_text(&c), "OK_NODATA:3,ERR_INVALID_RESOURCE_ID:2");
        assert_eq!(
            names_text(&[0x1100, 0x1205]),
            "OK_NODATA,ERR_INVALID_PARAMETER"
        );
        assert_eq!(
            created_ids(&[5, 6, 7], &[Some(0x1100), Some(0x1201), None]),
            vec![5]
        );
    }
}
