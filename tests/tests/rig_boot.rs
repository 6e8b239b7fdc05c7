//! Scenario `boot`: `vmm` inside L1 boots the L2 kernel (Debian's bzImage) to its init, which
//! prints `L2-MARKER` and reboots; the VMM exits 0 without a KVM error. The VMM decompressed the
//! kernel itself and placed it at random (KASLR): L2's `_text` is not the link address, a second
//! boot takes the kernel from the VMM's cache, and `nokaslr` keeps the link address. The VMM gave
//! the guest the initramfs's archives decompressed (from its cache the second time). A fourth boot
//! with the guest's own decompressors sees the same e820 map, command line and root file system
//! unpacked from the initramfs, from the compressed initramfs as it is; so do two boots with an
//! initramfs of three archives (uncompressed, gzip, zstd), unpacked by the VMM and by the guest.
//! The guest
//! reaches PCI configuration space through the ECAM window the MCFG announces and finds the host
//! bridge and the PCI-to-PCI bridge; a fifth boot with `--pci-config io` finds them through the
//! ports 0xCF8.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn vmm_boots_l2_to_its_marker() {
    let out = Scenario::new("boot")
        .timeout(Duration::from_secs(300))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    println!("boot: {r}");
    assert_eq!(
        r.get("marker"),
        Some("1"),
        "L2 marker not seen: {r}\nlog: {}",
        out.log_path.display()
    );
    assert_eq!(r.get("vmm_exit"), Some("0"), "vmm exit code: {r}");
    assert_eq!(
        r.get("kvm_error"),
        Some("0"),
        "KVM error in vmm output: {r}"
    );
    assert!(r.is_pass(), "{r}");
    let boot_s: f64 = r
        .parse_field("l2_boot_s")
        .unwrap_or_else(|| panic!("no l2_boot_s in {r}"));
    println!("l2_boot_s={boot_s:.2} (vmm start to L2-MARKER, L1 clock)");

    // Where the kernel ran, per boot.
    const LINK: u64 = 0xffff_ffff_8100_0000;
    let text = |n: u32| {
        let t = r
            .get(&format!("text{n}"))
            .unwrap_or_else(|| panic!("no text{n} in {r}"));
        u64::from_str_radix(t, 16).unwrap_or_else(|_| panic!("text{n}={t} is no address: {r}"))
    };
    for n in 1..=7 {
        assert_eq!(r.get(&format!("exit{n}")), Some("0"), "boot {n}: {r}");
    }
    assert_eq!(
        (
            r.get("load1"),
            r.get("load2"),
            r.get("load3"),
            r.get("load4"),
            r.get("load5")
        ),
        (
            Some("host"),
            Some("cache"),
            Some("cache"),
            Some("guest"),
            Some("cache")
        ),
        "who unpacked the kernel: {r}"
    );
    // PCI configuration: the ECAM window alone by default, the ports alone with --pci-config io;
    // either way the same functions, the host bridge and the PCI-to-PCI bridge among them.
    for n in 1..=4 {
        assert_eq!(r.get(&format!("pcicfg{n}")), Some("ecam"), "boot {n}: {r}");
    }
    assert_eq!(r.get("pcicfg5"), Some("conf1"), "--pci-config io: {r}");
    let devs = r.get("pcidevs1").unwrap_or("none");
    for want in ["0000:00:00.0=8086:0d57", "0000:00:01.0=1b36:0001"] {
        assert!(
            devs.split(',').any(|d| d == want),
            "no {want} in {devs}: {r}"
        );
    }
    for n in 2..=5 {
        assert_eq!(r.get(&format!("pcidevs{n}")), Some(devs), "boot {n}: {r}");
    }
    println!("PCI functions: {devs}");
    assert_eq!(
        (
            r.get("initramfs1"),
            r.get("initramfs2"),
            r.get("initramfs3"),
            r.get("initramfs4"),
            r.get("initramfs5")
        ),
        (
            Some("host"),
            Some("cache"),
            Some("cache"),
            Some("given"),
            Some("cache")
        ),
        "who unpacked the initramfs: {r}"
    );
    // An initramfs of three archives (uncompressed, gzip, zstd): the VMM unpacked it (a new file,
    // so not from the cache), then the guest did; every archive reached the root file system,
    // which is the same either way and holds more than the L2 initramfs alone.
    assert_eq!(
        (r.get("initramfs6"), r.get("initramfs7")),
        (Some("host"), Some("given")),
        "who unpacked the initramfs of three archives: {r}"
    );
    assert_eq!(r.get("layers1"), Some("none"), "{r}");
    for n in [6, 7] {
        assert_eq!(
            r.get(&format!("layers{n}")),
            Some("early+extra"),
            "boot {n}: {r}"
        );
    }
    assert_eq!(
        r.get("rootfs6"),
        r.get("rootfs7"),
        "host or guest unpacking: {r}"
    );
    assert_ne!(r.get("rootfs6"), r.get("rootfs1"), "{r}");
    // The guest freed the initramfs it was given: uncompressed, larger than the file.
    let initrd_kib = |n: u32| -> u64 {
        let v = r.get(&format!("initrd{n}")).unwrap_or("none");
        v.trim_end_matches('K')
            .parse()
            .unwrap_or_else(|_| panic!("initrd{n}={v} is no size: {r}"))
    };
    for (host, guest) in [(1, 4), (6, 7)] {
        assert!(
            initrd_kib(host) > initrd_kib(guest),
            "boots {host} and {guest}: the unpacked initramfs is not larger than the file: {r}"
        );
    }
    // Unpacked by the VMM or by the guest: the kernel was given the same things.
    for k in ["e820", "cmdline", "rootfs"] {
        let (host, guest) = (r.get(&format!("{k}1")), r.get(&format!("{k}4")));
        assert!(host.is_some_and(|v| v != "none"), "no {k}1: {r}");
        assert_eq!(
            host, guest,
            "{k} differs between host and guest decompression: {r}"
        );
    }
    assert_eq!(text(3), LINK, "nokaslr keeps the link address: {r}");
    for n in [1, 2] {
        let t = text(n);
        assert!(
            (LINK..0xffff_ffff_c000_0000).contains(&t) && t % (2 << 20) == 0,
            "boot {n}: _text {t:#x} outside the kernel's window: {r}"
        );
    }
    // Each lands on the link address with a chance of 1 in 476: both only by a broken KASLR.
    assert!(
        text(1) != LINK || text(2) != LINK,
        "two boots at the link address: {r}"
    );
    println!(
        "_text: {:#x}, {:#x}; with nokaslr {:#x}",
        text(1),
        text(2),
        text(3)
    );
}
