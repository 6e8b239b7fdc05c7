//! mmio-after-fault: page faults each followed at once by an MMIO read the host must emulate (L2
//! program of the rig scenario event-delivery).
//!
//! Finds the PCI device `--id` (default the vmm's virtio-gpu, 1af4:1050), unbinds its driver
//! (virtio-pci), maps its BAR `--bar` (default 0, 32 KiB of registers that the vmm traps) and,
//! `--rounds` times:
//! drops an anonymous page (`MADV_DONTNEED`), writes to it (a page fault this kernel handles by
//! itself, with no exit to the host) and reads the first word of the BAR's next page (an exit whose
//! instruction the host's KVM emulates; the first read of each page finds no mapping in the nested
//! page tables yet). A host CPU that is itself emulated (QEMU's TCG with nested SVM) can describe
//! the page fault's delivery in that exit, and KVM then refuses to emulate
//! (`KVM_INTERNAL_ERROR_DELIVERY_EV`): a VMM that stops on it ends this program early.
//!
//! Output: `RIG-RESULT scenario=mmio-after-fault status=PASS rounds=<n> pages=<BAR pages>`;
//! exit status 0 iff every round ran.

use std::process::ExitCode;

use clap::Parser;
use guest_tools::error::Result;
use guest_tools::mapping::Mapping;
use guest_tools::pci::{parse_id_pair, PciDevice};
use guest_tools::report::Reporter;

const PAGE: usize = 4096;

#[derive(Parser, Debug)]
#[command(about = "Page faults each followed by a trapped MMIO read (rig scenario event-delivery)")]
struct Args {
    /// PCI vendor:device (hex) of a device whose driver may be unbound.
    #[arg(long, default_value = "1af4:1050")]
    id: String,
    /// BAR to read (one the VMM traps).
    #[arg(long, default_value_t = 0)]
    bar: usize,
    /// Rounds of fault-then-read, page after page of the BAR.
    #[arg(long, default_value_t = 2000)]
    rounds: usize,
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let (vendor, device) = parse_id_pair(&args.id)?;
    let dev = PciDevice::find(vendor, device)?;
    rep.log(&dev.lspci_line()?);
    if let Some(driver) = dev.unbind()? {
        rep.log(&format!("unbound {driver}"));
    }
    let bar = dev.map_bar(args.bar)?;
    let pages = bar.len().div_ceil(PAGE);
    let page = Mapping::anonymous(PAGE, "fault page")?;
    for round in 0..args.rounds {
        page.discard()?;
        page.write_u32(0, round as u32);
        let _ = bar.read_u32((round % pages) * PAGE);
    }
    rep.result(
        true,
        &[
            ("rounds", args.rounds.to_string()),
            ("pages", pages.to_string()),
        ],
    );
    Ok(true)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new("mmio-after-fault");
    let outcome = run(&args, &rep);
    rep.finish(outcome)
}
