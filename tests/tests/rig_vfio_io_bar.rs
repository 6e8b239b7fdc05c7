//! A passed-through device's I/O-port BAR in the rig (scenario `vfio-io-bar`; QEMU's e1000e in L0): L1
//! binds the e1000e to vfio-pci and passes it to L2, whose /bin/io-bar reads and writes the NIC's
//! registers with 32-bit `in`/`out` through the IOADDR/IODATA window of its I/O BAR (BAR2, trapped by
//! the vmm and forwarded to the VFIO region) and through BAR0 (memory, mapped), and compares.
//! The scenario only gathers facts (the vmm's exit, its BAR line and port-exit counts, io-bar's
//! results); they are judged here.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

/// Registers read both ways (name in io-bar's lines, offset).
const READS: [(&str, &str); 4] = [
    ("ctrl", "0x0"),
    ("status", "0x8"),
    ("ral0", "0x5400"),
    ("rah0", "0x5404"),
];

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("{s:?} is not hex: {e}"))
}

#[test]
fn io_bar_accesses_are_forwarded_to_the_device() {
    let out = Scenario::new("vfio-io-bar")
        .timeout(Duration::from_secs(420))
        .e1000e(true)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    for l in out
        .vmm_output()
        .filter(|l| l.contains("lspci: ") || l.contains(": BAR "))
    {
        println!("{l}");
    }
    out.assert_passed();
    out.assert_vmm_ran_clean();
    let l2 = out.assert_l2_passed("io-bar");
    assert_eq!(l2.get("mismatches"), Some("none"), "{l2}");

    // The vmm placed the I/O BAR in its port window and said it traps it.
    let base = hex(l2.get("io_base").expect("io_base"));
    assert!(
        (0x1000..0x10000).contains(&base) && base.is_multiple_of(0x20),
        "I/O BAR at {base:#x}: {l2}"
    );
    assert_eq!(l2.get("io_size"), Some("0x20"), "{l2}");
    assert_eq!(
        out.result.get("vmm_io_bar"),
        Some("2:0x20"),
        "{}",
        out.result
    );
    assert!(
        out.vmm_output().any(|l| l.contains(
            ": BAR 2 I/O 0x20 bytes: port I/O, trapped: every access forwarded to VFIO region 2"
        )),
        "no vmm line for the trapped I/O BAR"
    );

    // Every in/out io-bar executed was exactly one user-space exit the vmm handled: its exit
    // summary's counts at IOADDR and IODATA equal io-bar's own (a sweep of reads both ways makes
    // them high enough to be listed).
    let sweep: u64 = l2.parse_field("sweep").expect("sweep");
    assert!(sweep >= 256, "sweep of {sweep} reads: {l2}");
    assert_eq!(l2.get("sweep_mismatches"), Some("0"), "{l2}");
    for (port, vmm_key, l2_key) in [
        ("IOADDR", "vmm_exits_ioaddr", "accesses_ioaddr"),
        ("IODATA", "vmm_exits_iodata", "accesses_iodata"),
    ] {
        let vmm: u64 = out
            .result
            .parse_field(vmm_key)
            .unwrap_or_else(|| panic!("no {vmm_key} in {}", out.result));
        let guest: u64 = l2
            .parse_field(l2_key)
            .unwrap_or_else(|| panic!("no {l2_key} in {l2}"));
        assert!(guest > sweep, "{l2_key}={guest}: {l2}");
        assert_eq!(
            vmm, guest,
            "{port}: vmm exits vs guest in/out: {}",
            out.result
        );
        println!("{port}: {guest} in/out in L2, {vmm} port exits handled by the vmm");
    }

    // Reads: the same value through the port window and through BAR0, never an unclaimed port's.
    for (name, offset) in READS {
        let d = out
            .l2_data("io-bar")
            .find(|d| d.get("reg") == Some(name))
            .unwrap_or_else(|| panic!("no RIG-DATA for register {name}"));
        assert_eq!(d.get("offset"), Some(offset), "{d}");
        let io = hex(d.get("io").expect("io"));
        let mmio = hex(d.get("mmio").expect("mmio"));
        assert_eq!(io, mmio, "{name} through I/O vs MMIO: {d}");
        assert_ne!(io, 0xffff_ffff, "{name} read as an unclaimed port: {d}");
        assert_eq!(d.get("match"), Some("1"), "{d}");
        println!("{name} ({offset}): I/O {io:#010x} = MMIO {mmio:#010x}");
    }
    // RAH0: address valid, and QEMU's MAC prefix (52:54:00) in RAL0.
    let rah0 = hex(l2.get("reg_rah0").expect("reg_rah0"));
    assert_eq!(rah0 >> 31, 1, "RAH0 {rah0:#x} without address-valid");
    let mac = l2.get("mac").expect("mac");
    assert!(mac.starts_with("52:54:00:"), "MAC {mac}: {l2}");

    // IOADDR reads back what was written (a register offset), 32 and 16 bits wide.
    assert_eq!(l2.get("ioaddr"), Some("0x00005400"), "{l2}");
    assert_eq!(l2.get("ioaddr16"), Some("0x5400"), "{l2}");

    // Writes cross over: port I/O -> MMIO (RDBAL0) and MMIO -> port I/O (TDBAL), two values each.
    for (dir, offset, values) in [
        ("io_to_mmio", "0x2800", ["0x12345670", "0xedcba980"]),
        ("mmio_to_io", "0x3800", ["0x0badcaf0", "0xf4523500"]),
    ] {
        let lines: Vec<_> = out
            .l2_data("io-bar")
            .filter(|d| d.get("write") == Some(dir))
            .collect();
        assert_eq!(lines.len(), 2, "RIG-DATA lines for {dir}");
        for (d, want) in lines.iter().zip(values) {
            assert_eq!(d.get("offset"), Some(offset), "{d}");
            let wrote = hex(d.get("wrote").expect("wrote"));
            assert_eq!(wrote, hex(want), "{d}");
            assert_eq!(hex(d.get("read").expect("read")), wrote, "{dir}: {d}");
            assert_eq!(
                hex(d.get("read_back_same_way").expect("read_back_same_way")),
                wrote,
                "{dir}: {d}"
            );
            println!("{dir} ({offset}): wrote {wrote:#010x}, read {wrote:#010x} the other way");
        }
    }
}
