//! bar-pattern: checks a PCI BAR both ways against L0 (L2 program of the rig scenarios vfio-bar and
//! vfio-iommufd).
//!
//! Finds the PCI device `--id` (default ivshmem-plain, 1af4:1110) in sysfs, prints an lspci-style
//! view of it (BDF, class, ids, each BAR's address/size/kind/flags), maps BAR `--bar` (default 2)
//! through sysfs `resource<N>` (O_RDWR|O_SYNC) and:
//! 1. reads, for every page `p < --pages`, the word L0 wrote before the run
//!    (`guest_tools::pattern::page_word(--read-tag, p)` at byte `p * 4096 + 0`) and counts mismatches;
//! 2. writes `page_word(--write-tag, p)` at byte `p * 4096 + 4` for every `p < --pages`, reads it
//!    back, and leaves it there for L0 to check in the backing file afterwards.
//!
//! Mapping `resource<N>` needs a BAR no driver has claimed (CONFIG_IO_STRICT_DEVMEM=y): no Linux
//! driver binds ivshmem-plain, so it can be mapped as it is; with any other driver bound, the
//! program refuses unless `--unbind` is given.
//!
//! Output: `RIG-DATA scenario=bar-pattern ...` lines and a final `RIG-RESULT ... status=PASS|FAIL`;
//! exit status 0 iff PASS.

use std::process::ExitCode;

use clap::Parser;
use guest_tools::error::{Error, Result};
use guest_tools::pattern::{
    page_word, DEFAULT_PAGES, GUEST_WORD_OFFSET, IVSHMEM_GUEST_TAG, IVSHMEM_L0_TAG, L0_WORD_OFFSET,
    PATTERN_PAGE,
};
use guest_tools::pci::{parse_hex_u64, parse_id_pair, PciDevice};
use guest_tools::report::{hex, Reporter};

#[derive(Parser, Debug)]
#[command(
    about = "Check an L0-written pattern in a PCI BAR and write one back (rig scenario vfio-bar)"
)]
struct Args {
    /// PCI vendor:device (hex).
    #[arg(long, default_value = "1af4:1110")]
    id: String,
    /// BAR to map.
    #[arg(long, default_value_t = 2)]
    bar: usize,
    /// Pages (4 KiB) to check and write, from the start of the BAR (capped at the BAR's size).
    #[arg(long, default_value_t = DEFAULT_PAGES)]
    pages: usize,
    /// Tag of the words L0 wrote: page p holds (tag << 24) | p at byte p * 4096.
    #[arg(long, default_value_t = format!("{IVSHMEM_L0_TAG:#x}"))]
    read_tag: String,
    /// Tag of the words written for L0: (tag << 24) | p at byte p * 4096 + 4.
    #[arg(long, default_value_t = format!("{IVSHMEM_GUEST_TAG:#x}"))]
    write_tag: String,
    /// Skip the read check (when nothing was written by L0).
    #[arg(long)]
    no_read: bool,
    /// Unbind a bound driver before mapping the BAR.
    #[arg(long)]
    unbind: bool,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "bar-pattern")]
    scenario: String,
}

fn tag(s: &str) -> Result<u8> {
    u8::try_from(parse_hex_u64(s)?).map_err(|e| Error::parse("tag", format!("{s}: {e}")))
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let (vendor, device) = parse_id_pair(&args.id)?;
    let (read_tag, write_tag) = (tag(&args.read_tag)?, tag(&args.write_tag)?);
    let dev = PciDevice::find(vendor, device)?;
    rep.log(&format!("lspci: {}", dev.lspci_line()?));
    let mut fields = vec![
        ("bdf", dev.bdf.clone()),
        ("vendor", format!("{:04x}", dev.vendor)),
        ("device", format!("{:04x}", dev.device)),
        ("class", format!("{:06x}", dev.class)),
        ("driver", dev.driver().unwrap_or_else(|| "none".into())),
    ];
    let bars = dev.bars()?;
    let names: Vec<String> = bars.iter().map(|b| format!("bar{}", b.index)).collect();
    for (b, n) in bars.iter().zip(&names) {
        fields.push((
            n.as_str(),
            format!("{:#x}:{:#x}:{}:{:#x}", b.start, b.size(), b.kind(), b.flags),
        ));
    }
    rep.data(&fields);

    if let Some(drv) = dev.driver() {
        if !args.unbind {
            return Err(Error::Unsupported(format!(
                "{} is bound to {drv}: its BARs cannot be mapped through sysfs (pass --unbind)",
                dev.bdf
            )));
        }
        dev.unbind()?;
        rep.log(&format!("unbound {} from {drv}", dev.bdf));
    }
    let bar = dev.bar(args.bar)?;
    let map = dev.map_bar(args.bar)?;
    let pages = args.pages.min(map.len() / PATTERN_PAGE);
    rep.log(&format!(
        "mapped BAR{} at {:#x} ({:#x} bytes); {} pages",
        args.bar,
        bar.start,
        map.len(),
        pages
    ));

    // 1. L0 -> guest.
    let mut read_bad = 0usize;
    let mut first_bad = String::from("none");
    if !args.no_read {
        for p in 0..pages {
            let got = map.read_u32(p * PATTERN_PAGE + L0_WORD_OFFSET);
            if got != page_word(read_tag, p) {
                if read_bad == 0 {
                    first_bad = format!("page{p}:{got:#010x}");
                }
                read_bad += 1;
            }
        }
    }
    let sample = |p: usize| format!("{:#010x}", map.read_u32(p * PATTERN_PAGE + L0_WORD_OFFSET));
    rep.data(&[
        ("direction", "l0-to-guest".into()),
        ("bar", args.bar.to_string()),
        ("bar_addr", hex(bar.start)),
        ("pages", pages.to_string()),
        ("tag", format!("{read_tag:#04x}")),
        ("checked", (!args.no_read).to_string()),
        ("bad", read_bad.to_string()),
        ("first_bad", first_bad),
        ("word_page0", sample(0)),
        ("word_page1", sample(1.min(pages.saturating_sub(1)))),
        ("word_last", sample(pages.saturating_sub(1))),
    ]);

    // 2. guest -> L0.
    for p in 0..pages {
        map.write_u32(
            p * PATTERN_PAGE + GUEST_WORD_OFFSET,
            page_word(write_tag, p),
        );
    }
    let readback_bad = (0..pages)
        .filter(|&p| map.read_u32(p * PATTERN_PAGE + GUEST_WORD_OFFSET) != page_word(write_tag, p))
        .count();
    rep.data(&[
        ("direction", "guest-to-l0".into()),
        ("pages", pages.to_string()),
        ("tag", format!("{write_tag:#04x}")),
        ("word_offset", GUEST_WORD_OFFSET.to_string()),
        ("readback_bad", readback_bad.to_string()),
    ]);
    let pass = pages > 0 && read_bad == 0 && readback_bad == 0;
    rep.result(
        pass,
        &[
            ("bdf", dev.bdf.clone()),
            ("bar_addr", hex(bar.start)),
            ("pages", pages.to_string()),
            ("read_bad", read_bad.to_string()),
            ("readback_bad", readback_bad.to_string()),
            ("written", pages.to_string()),
        ],
    );
    Ok(pass)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new(&args.scenario);
    rep.finish(run(&args, &rep))
}
