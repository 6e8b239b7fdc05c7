//! Finding a PCI device in sysfs and checking it can be passed through: bound to vfio-pci, in
//! a viable IOMMU group, with a VFIO node we may open: its own cdev (/dev/vfio/devices/vfioN,
//! used with iommufd) when the host has /dev/iommu, else its group node (`/dev/vfio/<group>`,
//! used with the legacy container).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::error::{Result, VfioPciError};

/// Drivers the kernel accepts in a viable group besides vfio-pci (vfio's allow list).
const GROUP_DRIVERS_ALLOWED: [&str; 3] = ["vfio-pci", "pci-stub", "pcieport"];

/// A located, checked passthrough candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioDeviceLocation {
    /// Canonical sysfs path, e.g. /sys/devices/pci0000:00/0000:00:03.0.
    pub sysfs_path: PathBuf,
    /// The PCI address, e.g. 0000:00:03.0.
    pub bdf: String,
    /// The IOMMU group number.
    pub group: u32,
    /// How the device is opened.
    pub access: VfioAccess,
}

/// The VFIO node a device is opened through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VfioAccess {
    /// Legacy: the group node `/dev/vfio/<group>`, added to a VFIO container.
    Group(PathBuf),
    /// iommufd: the device's cdev /dev/vfio/devices/vfioN, bound to /dev/iommu.
    Cdev(PathBuf),
}

impl VfioAccess {
    /// The node's path.
    pub fn node(&self) -> &Path {
        match self {
            VfioAccess::Group(p) | VfioAccess::Cdev(p) => p,
        }
    }

    /// Does this device go through iommufd?
    pub fn is_iommufd(&self) -> bool {
        matches!(self, VfioAccess::Cdev(_))
    }
}

/// The name of the device's VFIO cdev ("vfio3"), from <sysfs_path>/vfio-dev/, if the kernel
/// made one (CONFIG_VFIO_DEVICE_CDEV).
fn cdev_name(sysfs_path: &Path) -> Option<String> {
    let mut names = std::fs::read_dir(sysfs_path.join("vfio-dev"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vfio"));
    let name = names.next()?;
    names.next().is_none().then_some(name)
}

/// Normalises a BDF: "00:03.0" -> "0000:00:03.0"; `None` if it is not one.
pub fn normalize_bdf(s: &str) -> Option<String> {
    let full = if s.matches(':').count() == 1 {
        format!("0000:{s}")
    } else {
        s.to_string()
    };
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let ok = hex(domain, 4)
        && hex(bus, 2)
        && hex(dev, 2)
        && u8::from_str_radix(dev, 16).is_ok_and(|d| d < 32)
        && func.len() == 1
        && func.chars().all(|c| ('0'..='7').contains(&c));
    ok.then(|| full.to_ascii_lowercase())
}

fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Locates `spec` (a BDF or a sysfs path) under `sysfs` (normally "/sys") and checks it can
/// be passed through; `dev` is normally "/dev".
pub fn locate(spec: &str, sysfs: &Path, dev: &Path) -> Result<VfioDeviceLocation> {
    let path = if spec.starts_with('/') {
        PathBuf::from(spec)
    } else {
        let bdf = normalize_bdf(spec).ok_or_else(|| VfioPciError::InvalidSpec(spec.to_string()))?;
        sysfs.join("bus/pci/devices").join(bdf)
    };
    if !path.exists() {
        return Err(VfioPciError::NoSuchDevice {
            spec: spec.to_string(),
            path,
        });
    }
    let sysfs_path = path.canonicalize().map_err(|source| VfioPciError::Io {
        what: "resolving",
        path: path.clone(),
        source,
    })?;
    let bdf = sysfs_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| normalize_bdf(n).is_some())
        .ok_or_else(|| VfioPciError::InvalidSpec(spec.to_string()))?;
    let driver = link_name(&sysfs_path.join("driver"));
    if driver.as_deref() != Some("vfio-pci") {
        return Err(VfioPciError::NotBoundToVfio {
            bdf,
            driver: driver.unwrap_or_else(|| "none".into()),
        });
    }
    let group = link_name(&sysfs_path.join("iommu_group"))
        .and_then(|g| g.parse::<u32>().ok())
        .ok_or_else(|| VfioPciError::NoIommuGroup(bdf.clone()))?;

    // Viability as the kernel sees it: every device of the group on an allowed driver or none.
    let group_devices = sysfs
        .join("kernel/iommu_groups")
        .join(group.to_string())
        .join("devices");
    if let Ok(entries) = std::fs::read_dir(&group_devices) {
        let mut others = Vec::new();
        for entry in entries.flatten() {
            if let Some(d) = link_name(&entry.path().join("driver")) {
                if !GROUP_DRIVERS_ALLOWED.contains(&d.as_str()) {
                    others.push(format!("{} ({d})", entry.file_name().to_string_lossy()));
                }
            }
        }
        if !others.is_empty() {
            others.sort();
            return Err(VfioPciError::GroupNotViable {
                group,
                bdf,
                others: others.join(", "),
            });
        }
    }

    // iommufd when the host has it and the device has a cdev; the legacy group otherwise.
    let access = match cdev_name(&sysfs_path) {
        Some(name) if dev.join("iommu").exists() => {
            VfioAccess::Cdev(dev.join("vfio/devices").join(name))
        }
        _ => VfioAccess::Group(dev.join("vfio").join(group.to_string())),
    };
    check_openable(access.node())?;
    Ok(VfioDeviceLocation {
        sysfs_path,
        bdf,
        group,
        access,
    })
}

/// Opens `node` read/write once to turn "missing", "permission denied" and "busy" into clear
/// errors before vfio-ioctls opens it for real.
pub fn check_openable(node: &Path) -> Result<()> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(node)
        .map(drop)
        .map_err(|e| open_error(e, node))
}

/// A clear error for a VFIO node (group, cdev, /dev/vfio/vfio, /dev/iommu) that did not open.
pub fn open_error(io: std::io::Error, node: &Path) -> VfioPciError {
    match io.raw_os_error() {
        Some(libc::ENOENT) => VfioPciError::NoGroupNode(node.to_path_buf()),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            VfioPciError::PermissionDenied(node.to_path_buf())
        }
        Some(libc::EBUSY) => VfioPciError::GroupBusy(node.to_path_buf()),
        _ => VfioPciError::Io {
            what: "opening",
            path: node.to_path_buf(),
            source: io,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct FakeSys {
        root: PathBuf,
    }

    impl FakeSys {
        fn new(name: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("pci-sysfs-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for d in [
                "sys/bus/pci/devices",
                "sys/devices/pci0000:00",
                "sys/bus/pci/drivers",
                "dev/vfio",
            ] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            Self { root }
        }
        fn sys(&self) -> PathBuf {
            self.root.join("sys")
        }
        fn dev(&self) -> PathBuf {
            self.root.join("dev")
        }
        fn add(&self, bdf: &str, driver: Option<&str>, group: Option<u32>) {
            let d = self.sys().join("devices/pci0000:00").join(bdf);
            std::fs::create_dir_all(&d).unwrap();
            symlink(&d, self.sys().join("bus/pci/devices").join(bdf)).unwrap();
            if let Some(drv) = driver {
                let dp = self.sys().join("bus/pci/drivers").join(drv);
                std::fs::create_dir_all(&dp).unwrap();
                symlink(&dp, d.join("driver")).unwrap();
            }
            if let Some(g) = group {
                let gp = self.sys().join("kernel/iommu_groups").join(g.to_string());
                std::fs::create_dir_all(gp.join("devices")).unwrap();
                symlink(&gp, d.join("iommu_group")).unwrap();
                symlink(&d, gp.join("devices").join(bdf)).unwrap();
            }
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn bdf_forms() {
        assert_eq!(normalize_bdf("00:03.0").as_deref(), Some("0000:00:03.0"));
        assert_eq!(
            normalize_bdf("0000:0A:1f.7").as_deref(),
            Some("0000:0a:1f.7")
        );
        assert_eq!(normalize_bdf("0000:00:20.0"), None, "device 0x20 > 31");
        assert_eq!(normalize_bdf("00:03.8"), None);
        assert_eq!(normalize_bdf("zz:03.0"), None);
        assert_eq!(normalize_bdf("ivshmem"), None);
    }

    #[test]
    fn located_when_bound_and_viable() {
        let fs = FakeSys::new("ok");
        fs.add("0000:00:03.0", Some("vfio-pci"), Some(4));
        std::fs::write(fs.dev().join("vfio/4"), b"").unwrap();
        let loc = locate("00:03.0", &fs.sys(), &fs.dev()).unwrap();
        assert_eq!(loc.bdf, "0000:00:03.0");
        assert_eq!(loc.group, 4);
        assert!(loc.sysfs_path.ends_with("pci0000:00/0000:00:03.0"));
        // The sysfs path form works too.
        let p = fs.sys().join("bus/pci/devices/0000:00:03.0");
        assert_eq!(
            locate(p.to_str().unwrap(), &fs.sys(), &fs.dev())
                .unwrap()
                .group,
            4
        );
    }

    #[test]
    fn iommufd_cdev_when_the_host_has_dev_iommu_else_the_group() {
        let fs = FakeSys::new("cdev");
        fs.add("0000:00:03.0", Some("vfio-pci"), Some(4));
        std::fs::write(fs.dev().join("vfio/4"), b"").unwrap();
        let group = VfioAccess::Group(fs.dev().join("vfio/4"));
        // No cdev, no /dev/iommu: the legacy group.
        let loc = locate("00:03.0", &fs.sys(), &fs.dev()).unwrap();
        assert_eq!(loc.access, group);
        assert!(!loc.access.is_iommufd());
        // /dev/iommu but a kernel without device cdevs: still the group.
        std::fs::write(fs.dev().join("iommu"), b"").unwrap();
        assert_eq!(
            locate("00:03.0", &fs.sys(), &fs.dev()).unwrap().access,
            group
        );
        // The device has cdev vfio0 but its node is missing: a clear error naming it.
        let d = fs
            .sys()
            .join("devices/pci0000:00/0000:00:03.0/vfio-dev/vfio0");
        std::fs::create_dir_all(&d).unwrap();
        let cdev = fs.dev().join("vfio/devices/vfio0");
        match locate("00:03.0", &fs.sys(), &fs.dev()) {
            Err(VfioPciError::NoGroupNode(p)) => assert_eq!(p, cdev),
            other => panic!("{other:?}"),
        }
        std::fs::create_dir_all(fs.dev().join("vfio/devices")).unwrap();
        std::fs::write(&cdev, b"").unwrap();
        let loc = locate("00:03.0", &fs.sys(), &fs.dev()).unwrap();
        assert_eq!(loc.access, VfioAccess::Cdev(cdev.clone()));
        assert!(loc.access.is_iommufd());
        assert_eq!(loc.access.node(), cdev.as_path());
        // Without /dev/iommu the cdev is not used.
        std::fs::remove_file(fs.dev().join("iommu")).unwrap();
        assert_eq!(
            locate("00:03.0", &fs.sys(), &fs.dev()).unwrap().access,
            group
        );
    }

    #[test]
    fn clear_errors() {
        let fs = FakeSys::new("err");
        let e = locate("00:09.0", &fs.sys(), &fs.dev()).unwrap_err();
        assert!(matches!(e, VfioPciError::NoSuchDevice { .. }), "{e}");
        assert!(matches!(
            locate("bogus", &fs.sys(), &fs.dev()),
            Err(VfioPciError::InvalidSpec(_))
        ));

        fs.add("0000:00:04.0", Some("ivshmem"), Some(5));
        let e = locate("0000:00:04.0", &fs.sys(), &fs.dev()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("not bound to vfio-pci (driver: ivshmem)"),
            "{msg}"
        );
        assert!(
            msg.contains("driver_override") && msg.contains("drivers_probe"),
            "{msg}"
        );

        fs.add("0000:00:05.0", None, Some(6));
        assert!(locate("00:05.0", &fs.sys(), &fs.dev())
            .unwrap_err()
            .to_string()
            .contains("driver: none"));

        fs.add("0000:00:06.0", Some("vfio-pci"), None);
        assert!(matches!(
            locate("00:06.0", &fs.sys(), &fs.dev()),
            Err(VfioPciError::NoIommuGroup(_))
        ));

        fs.add("0000:00:07.0", Some("vfio-pci"), Some(7));
        assert!(matches!(
            locate("00:07.0", &fs.sys(), &fs.dev()),
            Err(VfioPciError::NoGroupNode(_))
        ));
    }

    #[test]
    fn group_with_host_driver_is_not_viable() {
        let fs = FakeSys::new("viable");
        fs.add("0000:00:08.0", Some("vfio-pci"), Some(9));
        // A sibling in group 9 bound to a host driver.
        let sib = fs.sys().join("devices/pci0000:00/0000:00:08.1");
        std::fs::create_dir_all(&sib).unwrap();
        let drv = fs.sys().join("bus/pci/drivers/e1000e");
        std::fs::create_dir_all(&drv).unwrap();
        symlink(&drv, sib.join("driver")).unwrap();
        symlink(
            &sib,
            fs.sys().join("kernel/iommu_groups/9/devices/0000:00:08.1"),
        )
        .unwrap();
        let e = locate("00:08.0", &fs.sys(), &fs.dev()).unwrap_err();
        assert!(e.to_string().contains("0000:00:08.1 (e1000e)"), "{e}");
    }
}
