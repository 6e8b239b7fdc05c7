//! The iommufd L1 kernel (`resources/rig/build-kernel.sh`, run.sh `--l1-kernel iommufd`): Debian's 7.3
//! source with IOMMUFD and the VFIO device cdev, everything built in. Scenario `iommufd-smoke` checks
//! /dev/iommu, the device cdev of ivshmem bound to vfio-pci (sysfs vfio-dev/vfioN and the matching
//! /dev/vfio/devices/vfioN), the legacy /dev/vfio/vfio and group nodes, nested kvm_amd, and that the
//! vmm boots L2 to its marker on this kernel. The scenario only gathers these facts; they are
//! judged here.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::{L1Kernel, Scenario};

#[test]
fn iommufd_kernel_has_the_vfio_cdev_and_boots_l2() {
    let out = Scenario::new("iommufd-smoke")
        .l1_kernel(L1Kernel::Iommufd)
        .timeout(Duration::from_secs(360))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    let r = &out.result;

    // L1 ran the source-built kernel, not Debian's, and its init loaded no modules.
    let kernel = r.get("kernel").unwrap_or_default();
    assert!(kernel.ends_with("-rig-iommufd"), "L1 kernel {kernel}: {r}");
    assert!(
        out.log
            .lines()
            .any(|l| l.contains("no modules loaded, built-in kernel assumed")),
        "L1 init did not skip module loading; log: {}",
        out.log_path.display()
    );

    assert_eq!(
        r.get("dev_iommu"),
        Some("1"),
        "/dev/iommu is no char device: {r}"
    );

    // The device cdev of the bound ivshmem: the node exists, with sysfs' major:minor.
    let cdev = r.get("cdev").unwrap_or_default();
    let n = cdev
        .strip_prefix("/dev/vfio/devices/vfio")
        .unwrap_or_else(|| panic!("cdev {cdev:?}: {r}"));
    assert!(
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        "cdev {cdev}"
    );
    assert_eq!(
        r.get("cdev_node"),
        Some("1"),
        "{cdev} is no char device: {r}"
    );
    let sysfs_dev = r.get("cdev_sysfs_dev").unwrap_or("none");
    assert!(
        sysfs_dev.split_once(':').is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        }),
        "sysfs dev of {cdev}: {sysfs_dev:?}: {r}"
    );
    assert_eq!(
        r.get("cdev_dev"),
        Some(sysfs_dev),
        "{cdev}'s major:minor differs from sysfs: {r}"
    );
    assert!(r.get("bdf").unwrap_or_default().starts_with("0000:"), "{r}");
    // The legacy nodes.
    assert_eq!(r.get("vfio_group_node"), Some("1"), "group node: {r}");
    assert_eq!(
        r.get("vfio_container_node"),
        Some("1"),
        "/dev/vfio/vfio: {r}"
    );
    assert!(
        r.get("vfio_group")
            .unwrap_or_default()
            .starts_with("/dev/vfio/"),
        "{r}"
    );
    assert!(
        matches!(r.get("kvm_amd_nested"), Some("1" | "Y")),
        "kvm_amd nested: {r}"
    );

    // The L2 boot through KVM on this kernel.
    assert_eq!(r.get("marker"), Some("1"), "{r}");
    assert_eq!(r.get("vmm_exit"), Some("0"), "{r}");
    assert_eq!(r.get("kvm_error"), Some("0"), "{r}");
    println!(
        "iommufd-smoke: L1 kernel {kernel}, L1 init done at {} s, scenario started at {} s, \
         /dev/iommu {}, {cdev} {}, l2_boot_s {}",
        out.data_value("l1_init_done_s").unwrap_or("?"),
        out.data_value("l1_uptime_at_scenario_s").unwrap_or("?"),
        out.data_value("iommu_dev").unwrap_or("?"),
        out.data_value("cdev_dev").unwrap_or("?"),
        r.get("l2_boot_s").unwrap_or("?"),
    );
}
