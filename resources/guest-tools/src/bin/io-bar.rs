//! io-bar: a passed-through device's I/O-port BAR, read and written with real `in`/`out`
//! instructions and checked against the same registers through its memory BAR.
//!
//! The device is QEMU's e1000e (8086:10d3, QEMU `hw/net/e1000e.c`): BAR0 is the 128 KiB register
//! file (memory), BAR2 a 32-byte I/O BAR holding the e1000 indirect window: IOADDR at +0 (a
//! register offset into BAR0; reads back as written) and IODATA at +4 (reads and writes the
//! register IOADDR names). QEMU serves the window with 4-byte accesses only (`io_ops.impl`), so
//! every access here is a 32-bit `in`/`out` (plus one 16-bit read of IOADDR, which QEMU widens).
//! Under a VMM an I/O BAR cannot be mapped into the guest: each access exits and the VMM must
//! forward it to the device (VFIO region read/write), which is what this checks.
//!
//! Steps: find the device (no driver bound), enable I/O and memory decoding in its command
//! register (sysfs `config`), map BAR0 (`resource0`), `ioperm` BAR2's ports, then
//! - read CTRL, STATUS, RAL0 and RAH0 both ways and compare (never all-ones, the value of an
//!   unclaimed port);
//! - write IOADDR and read it back (32 and 16 bits);
//! - write RDBAL0 through IODATA and read it through BAR0, and write TDBAL through BAR0 and read it
//!   through IODATA (QEMU stores both as written with the low 4 bits clear); the old values are
//!   put back;
//! - sweep: `--sweep` more reads both ways (so the vmm's exit summary ranks the two ports high).
//!
//! Output: `RIG-DATA scenario=io-bar ...` lines, a final `RIG-RESULT`; exit 0 iff PASS.

use std::cell::Cell;
use std::process::ExitCode;

use clap::Parser;
use guest_tools::error::{Error, Result};
use guest_tools::ioport::PortWindow;
use guest_tools::pci::{parse_id_pair, MmioRegion, PciDevice, PCI_COMMAND_IO, PCI_COMMAND_MEMORY};
use guest_tools::report::Reporter;

/// The indirect window in the I/O BAR.
const IOADDR: u16 = 0x0;
const IODATA: u16 = 0x4;
/// Registers of the memory BAR (byte offsets).
const CTRL: u32 = 0x0000;
const STATUS: u32 = 0x0008;
const RDBAL0: u32 = 0x2800;
const TDBAL: u32 = 0x3800;
const RAL0: u32 = 0x5400;
const RAH0: u32 = 0x5404;
/// Values written to the descriptor base registers (QEMU keeps bits 31..4).
const IO_TO_MMIO: [u32; 2] = [0x1234_5670, 0xedcb_a980];
const MMIO_TO_IO: [u32; 2] = [0x0bad_caf0, 0xf452_3500];

#[derive(Parser, Debug)]
#[command(about = "Check a passed-through e1000e's I/O BAR against its memory BAR (rig)")]
struct Args {
    /// PCI vendor:device (hex).
    #[arg(long, default_value = "8086:10d3")]
    id: String,
    /// The memory BAR holding the registers.
    #[arg(long, default_value_t = 0)]
    mmio_bar: usize,
    /// The I/O BAR holding IOADDR/IODATA.
    #[arg(long, default_value_t = 2)]
    io_bar: usize,
    /// Reads both ways after the checks (each is an IOADDR write and an IODATA read).
    #[arg(long, default_value_t = 512)]
    sweep: u32,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "io-bar")]
    scenario: String,
}

/// The register file both ways; counts the port accesses (each one a VM exit under a VMM).
struct Regs {
    mmio: MmioRegion,
    io: PortWindow,
    /// Accesses to IOADDR and to IODATA.
    port_accesses: Cell<[u64; 2]>,
}

impl Regs {
    fn count(&self, off: u16) {
        let mut n = self.port_accesses.get();
        n[usize::from(off / 4)] += 1;
        self.port_accesses.set(n);
    }

    fn out32(&self, off: u16, v: u32) {
        self.count(off);
        self.io.write_u32(off, v);
    }

    fn in32(&self, off: u16) -> u32 {
        self.count(off);
        self.io.read_u32(off)
    }

    fn in16(&self, off: u16) -> u16 {
        self.count(off);
        self.io.read_u16(off)
    }

    fn mmio_read(&self, reg: u32) -> u32 {
        self.mmio.read_u32(reg as usize)
    }

    fn mmio_write(&self, reg: u32, v: u32) {
        self.mmio.write_u32(reg as usize, v);
    }

    fn io_read(&self, reg: u32) -> u32 {
        self.out32(IOADDR, reg);
        self.in32(IODATA)
    }

    fn io_write(&self, reg: u32, v: u32) {
        self.out32(IOADDR, reg);
        self.out32(IODATA, v);
    }
}

fn h32(v: u32) -> String {
    format!("{v:#010x}")
}

/// The MAC address in RAL0/RAH0 (little-endian bytes, RAH0 bits 15..0 hold the last two).
fn mac(ral: u32, rah: u32) -> String {
    let b = [ral.to_le_bytes(), rah.to_le_bytes()].concat();
    b[..6]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let (vendor, device) = parse_id_pair(&args.id)?;
    let dev = PciDevice::find(vendor, device)?;
    rep.log(&format!("lspci: {}", dev.lspci_line()?));
    if let Some(drv) = dev.driver() {
        return Err(Error::Unsupported(format!(
            "{} is bound to {drv}; io-bar needs it unbound",
            dev.bdf
        )));
    }
    let mem = dev.bar(args.mmio_bar)?;
    let io = dev.bar(args.io_bar)?;
    if !mem.is_mem() || !io.is_io() {
        return Err(Error::Unsupported(format!(
            "{}: BAR{} is {} and BAR{} is {}; want memory and I/O",
            dev.bdf,
            mem.index,
            mem.kind(),
            io.index,
            io.kind()
        )));
    }
    if io.size() < 8 {
        return Err(Error::Unsupported(format!(
            "{}: I/O BAR{} has {} ports, IOADDR/IODATA need 8",
            dev.bdf,
            io.index,
            io.size()
        )));
    }
    let (cmd_old, cmd_new) = dev.update_command(
        PCI_COMMAND_IO | PCI_COMMAND_MEMORY,
        0,
        PCI_COMMAND_IO | PCI_COMMAND_MEMORY,
    )?;
    rep.data(&[
        ("bdf", dev.bdf.clone()),
        (
            "mmio_bar",
            format!("{}:{:#x}+{:#x}", mem.index, mem.start, mem.size()),
        ),
        (
            "io_bar",
            format!("{}:{:#x}+{:#x}", io.index, io.start, io.size()),
        ),
        ("io_bar_flags", format!("{:#x}", io.flags)),
        ("command_before", format!("{cmd_old:#06x}")),
        ("command_after", format!("{cmd_new:#06x}")),
    ]);
    let regs = Regs {
        mmio: dev.map_bar(mem.index)?,
        io: PortWindow::open(io.start, io.size())?,
        port_accesses: Cell::new([0; 2]),
    };

    let mut checks = 0u32;
    let mut bad = Vec::new();
    let mut check = |what: &str, ok: bool| {
        checks += 1;
        if !ok {
            bad.push(what.to_string());
        }
    };
    let mut fields: Vec<(&str, String)> = vec![
        ("bdf", dev.bdf.clone()),
        ("io_base", format!("{:#x}", io.start)),
        ("io_size", format!("{:#x}", io.size())),
    ];

    // Reads: the same register both ways.
    let mut seen = [0u32; 4];
    let reads = [
        ("ctrl", "reg_ctrl", CTRL),
        ("status", "reg_status", STATUS),
        ("ral0", "reg_ral0", RAL0),
        ("rah0", "reg_rah0", RAH0),
    ];
    for (i, (name, key, reg)) in reads.into_iter().enumerate() {
        let m = regs.mmio_read(reg);
        let p = regs.io_read(reg);
        let ok = m == p && p != u32::MAX;
        rep.data(&[
            ("reg", name.to_string()),
            ("offset", format!("{reg:#x}")),
            ("io", h32(p)),
            ("mmio", h32(m)),
            ("match", u8::from(ok).to_string()),
        ]);
        check(name, ok);
        seen[i] = p;
        // `reg_` keeps STATUS from passing for the line's `status=` field.
        let value = if m == p {
            h32(p)
        } else {
            format!("{}!={}", h32(p), h32(m))
        };
        fields.push((key, value));
    }
    let mac = mac(seen[2], seen[3]);
    // RAH0 bit 31: address valid (QEMU sets it for the permanent address).
    check("rah0_av", seen[3] >> 31 == 1);
    fields.push(("mac", mac));

    // IOADDR reads back what was written, 32 and 16 bits wide.
    regs.out32(IOADDR, RAL0);
    let ioaddr = regs.in32(IOADDR);
    let ioaddr16 = regs.in16(IOADDR);
    check("ioaddr", ioaddr == RAL0);
    check("ioaddr16", u32::from(ioaddr16) == RAL0);
    fields.push(("ioaddr", h32(ioaddr)));
    fields.push(("ioaddr16", format!("{ioaddr16:#06x}")));

    // Writes through IODATA land in the register file, and the reverse.
    let mut both_ways = |name: &'static str, reg: u32, values: [u32; 2], via_io: bool| {
        let old = regs.mmio_read(reg);
        let mut got = Vec::new();
        for v in values {
            let (r, back) = if via_io {
                regs.io_write(reg, v);
                (regs.mmio_read(reg), regs.io_read(reg))
            } else {
                regs.mmio_write(reg, v);
                (regs.io_read(reg), regs.mmio_read(reg))
            };
            rep.data(&[
                ("write", name.to_string()),
                ("offset", format!("{reg:#x}")),
                ("wrote", h32(v)),
                ("read", h32(r)),
                ("read_back_same_way", h32(back)),
                ("match", u8::from(r == v && back == v).to_string()),
            ]);
            check(name, r == v && back == v);
            got.push(format!("{}:{}", h32(v), h32(r)));
        }
        regs.mmio_write(reg, old);
        check("restore", regs.mmio_read(reg) == old);
        fields.push((name, got.join(",")));
    };
    both_ways("io_to_mmio", RDBAL0, IO_TO_MMIO, true);
    both_ways("mmio_to_io", TDBAL, MMIO_TO_IO, false);

    // A sweep: many reads both ways, enough that IOADDR and IODATA are among the ports the vmm
    // counts most in its exit summary (every access is a user-space exit there).
    let mut sweep_bad = 0u32;
    for i in 0..args.sweep {
        let (_, _, reg) = reads[i as usize % reads.len()];
        if regs.io_read(reg) != regs.mmio_read(reg) {
            sweep_bad += 1;
        }
    }
    check("sweep", sweep_bad == 0);
    fields.push(("sweep", args.sweep.to_string()));
    fields.push(("sweep_mismatches", sweep_bad.to_string()));
    let [at_ioaddr, at_iodata] = regs.port_accesses.get();
    fields.push(("accesses_ioaddr", at_ioaddr.to_string()));
    fields.push(("accesses_iodata", at_iodata.to_string()));

    let pass = bad.is_empty();
    fields.push(("checks", checks.to_string()));
    fields.push((
        "mismatches",
        if pass {
            "none".to_string()
        } else {
            bad.join(",")
        },
    ));
    rep.result(pass, &fields);
    Ok(pass)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new(&args.scenario);
    rep.finish(run(&args, &rep))
}
