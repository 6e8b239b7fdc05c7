//! edu-dma: DMA from guest RAM to QEMU's `edu` device and back (L2 program of the rig scenarios
//! vfio-edu and vfio-iommufd).
//!
//! The edu device (1234:11e8, QEMU `docs/specs/edu.rst`): BAR0 holds 32-bit registers (only 4-byte
//! accesses below 0x80); DMA source 0x80, destination 0x88, count 0x90, command 0x98 (bit 0 start,
//! bit 1 direction 0 = RAM -> device, 1 = device -> RAM); the device's buffer is at 0x40000..0x41000
//! (anything outside it must never be programmed; Debian's QEMU 7.2 also aborts - `hw_error` - on a
//! transfer that ends exactly at 0x41000, an off-by-one in its range check, so at most 4095 bytes
//! are ever programmed); a transfer completes on a 100 ms timer; the
//! device masks DMA addresses to 28 bits by default, so the pages used lie below 256 MiB.
//!
//! Steps: find the device, print an lspci-style view, set Memory Space + Bus Master in the command
//! register through sysfs `config` (vfio/the kernel leave bus mastering off), map BAR0 through
//! `resource0`, check the id and liveness registers, pick two locked pages below `--dma-limit`
//! (guest-physical addresses from /proc/self/pagemap), fill the first with
//! `guest_tools::pattern::dma_byte`, DMA it into the device buffer, DMA the device buffer into the
//! second page, compare. Every wait is bounded (`--timeout-ms` per transfer).
//!
//! Output: `RIG-DATA scenario=edu-dma ...` lines, a final `RIG-RESULT`; exit 0 iff PASS.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use guest_tools::error::{Error, Result};
use guest_tools::pagemap::{find_pages_below, Pagemap, PAGE_SIZE};
use guest_tools::pattern::dma_byte;
use guest_tools::pci::{
    parse_hex_u64, parse_id_pair, MmioRegion, PciDevice, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY,
};
use guest_tools::report::{hex, Reporter};

const REG_ID: usize = 0x00;
const REG_LIVENESS: usize = 0x04;
const REG_DMA_SRC: usize = 0x80;
const REG_DMA_DST: usize = 0x88;
const REG_DMA_COUNT: usize = 0x90;
const REG_DMA_CMD: usize = 0x98;
const DMA_CMD_START: u32 = 0x1;
const DMA_CMD_TO_RAM: u32 = 0x2;
/// The device's DMA buffer (device-side address) and its size.
const EDU_BUF: u32 = 0x40000;
const EDU_BUF_SIZE: usize = 4096;
/// Longest transfer programmed: QEMU 7.2's edu_check_range wants `start + len < 0x41000`.
const MAX_LEN: usize = EDU_BUF_SIZE - 1;

#[derive(Parser, Debug)]
#[command(about = "DMA a buffer through QEMU's edu device and back (rig scenario vfio-edu)")]
struct Args {
    /// PCI vendor:device (hex).
    #[arg(long, default_value = "1234:11e8")]
    id: String,
    /// Bytes to transfer (1..=4095; QEMU 7.2 aborts on a transfer ending at 0x41000).
    #[arg(long, default_value_t = 4000)]
    len: usize,
    /// Highest DMA address + 1 the device can reach (edu's default 28-bit mask).
    #[arg(long, default_value = "0x10000000")]
    dma_limit: String,
    /// Give up on a transfer after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Most locked memory (MiB) to go through looking for pages below the limit.
    #[arg(long, default_value_t = 256)]
    max_mib: usize,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "edu-dma")]
    scenario: String,
}

/// Programs one transfer (32-bit register writes; addresses fit in 32 bits) and polls the command
/// register until the start bit clears. Returns the time it took.
fn transfer(
    bar: &MmioRegion,
    src: u64,
    dst: u64,
    len: usize,
    cmd: u32,
    timeout: Duration,
) -> Result<Duration> {
    let (src32, dst32) = match (u32::try_from(src), u32::try_from(dst)) {
        (Ok(s), Ok(d)) => (s, d),
        _ => {
            return Err(Error::Unsupported(format!(
                "DMA address {src:#x}/{dst:#x} above 4 GiB"
            )))
        }
    };
    if bar.read_u32(REG_DMA_CMD) & DMA_CMD_START != 0 {
        return Err(Error::Unsupported(
            "a DMA transfer is already running".into(),
        ));
    }
    bar.write_u32(REG_DMA_SRC, src32);
    bar.write_u32(REG_DMA_DST, dst32);
    bar.write_u32(REG_DMA_COUNT, len as u32);
    let back = (
        bar.read_u32(REG_DMA_SRC),
        bar.read_u32(REG_DMA_DST),
        bar.read_u32(REG_DMA_COUNT),
    );
    if back != (src32, dst32, len as u32) {
        return Err(Error::Unsupported(format!(
            "DMA registers read back {:#x}/{:#x}/{:#x}, wrote {src32:#x}/{dst32:#x}/{len:#x}",
            back.0, back.1, back.2
        )));
    }
    let t0 = Instant::now();
    bar.write_u32(REG_DMA_CMD, cmd | DMA_CMD_START);
    while bar.read_u32(REG_DMA_CMD) & DMA_CMD_START != 0 {
        if t0.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("edu DMA {src:#x} -> {dst:#x} ({len} bytes)"),
                ms: timeout.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(t0.elapsed())
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let (vendor, device) = parse_id_pair(&args.id)?;
    let limit = parse_hex_u64(&args.dma_limit)?;
    if args.len == 0 || args.len > MAX_LEN {
        return Err(Error::Unsupported(format!(
            "--len {} not in 1..={MAX_LEN}",
            args.len
        )));
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let dev = PciDevice::find(vendor, device)?;
    rep.log(&format!("lspci: {}", dev.lspci_line()?));
    if let Some(drv) = dev.driver() {
        return Err(Error::Unsupported(format!(
            "{} is bound to {drv}; edu-dma needs it unbound",
            dev.bdf
        )));
    }
    let (cmd_old, cmd_new) = dev.update_command(
        PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
        0,
        PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
    )?;
    let bar0 = dev.bar(0)?;
    rep.data(&[
        ("bdf", dev.bdf.clone()),
        ("vendor", format!("{:04x}", dev.vendor)),
        ("device", format!("{:04x}", dev.device)),
        ("bar0", format!("{:#x}:{:#x}", bar0.start, bar0.size())),
        ("command_before", format!("{cmd_old:#06x}")),
        ("command_after", format!("{cmd_new:#06x}")),
    ]);
    let bar = dev.map_bar(0)?;
    let id = bar.read_u32(REG_ID);
    if id & 0xff != 0xed {
        return Err(Error::Unsupported(format!(
            "identification register {id:#010x} is not edu's (0xRRrr00ed)"
        )));
    }
    bar.write_u32(REG_LIVENESS, 0x1234_5678);
    let live = bar.read_u32(REG_LIVENESS);
    if live != !0x1234_5678u32 {
        return Err(Error::Unsupported(format!(
            "liveness register read {live:#010x}, want {:#010x}",
            !0x1234_5678u32
        )));
    }

    let pm = Pagemap::open()?;
    let (chunks, picks) = find_pages_below(&pm, limit, 2, 1024, args.max_mib.max(4) / 4)?;
    let (src, dst) = (picks[0], picks[1]);
    let src_pages = &chunks[src.chunk];
    let dst_pages = &chunks[dst.chunk];
    let (src_off, dst_off) = (src.page * PAGE_SIZE, dst.page * PAGE_SIZE);
    for i in 0..PAGE_SIZE {
        src_pages.write_u8(src_off + i, dma_byte(i));
        dst_pages.write_u8(dst_off + i, 0);
    }
    // Re-read the addresses after writing (the frames are locked; this confirms they did not move).
    let src_phys = src_pages.phys(&pm, src_off)?;
    let dst_phys = dst_pages.phys(&pm, dst_off)?;
    rep.data(&[
        ("id", format!("{id:#010x}")),
        ("src_phys", hex(src_phys)),
        ("dst_phys", hex(dst_phys)),
        ("dma_limit", hex(limit)),
        ("locked_chunks", chunks.len().to_string()),
        ("len", args.len.to_string()),
    ]);
    if src_phys != src.phys || dst_phys != dst.phys {
        return Err(Error::Unsupported("a locked page moved".into()));
    }

    let t_in = transfer(&bar, src_phys, u64::from(EDU_BUF), args.len, 0, timeout)?;
    let t_out = transfer(
        &bar,
        u64::from(EDU_BUF),
        dst_phys,
        args.len,
        DMA_CMD_TO_RAM,
        timeout,
    )?;
    let mut bad = 0usize;
    let mut first_bad = String::from("none");
    for i in 0..PAGE_SIZE {
        let want = if i < args.len { dma_byte(i) } else { 0 };
        let got = dst_pages.read_u8(dst_off + i);
        if got != want {
            if bad == 0 {
                first_bad = format!("{i}:{got:#04x}!={want:#04x}");
            }
            bad += 1;
        }
    }
    let pass = bad == 0;
    rep.result(
        pass,
        &[
            ("bdf", dev.bdf.clone()),
            ("len", args.len.to_string()),
            ("bad_bytes", bad.to_string()),
            ("first_bad", first_bad),
            ("src_phys", hex(src_phys)),
            ("dst_phys", hex(dst_phys)),
            ("to_device_ms", t_in.as_millis().to_string()),
            ("to_ram_ms", t_out.as_millis().to_string()),
        ],
    );
    Ok(pass)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new(&args.scenario);
    rep.finish(run(&args, &rep))
}
