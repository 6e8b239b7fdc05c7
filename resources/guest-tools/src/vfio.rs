//! VFIO through the legacy group/container interface, for guest programs: binding a PCI device to
//! `vfio-pci` (driver_override), opening its group with a container of a given IOMMU type (e.g.
//! [`VFIO_NOIOMMU_IOMMU`] in a guest without an IOMMU, `/dev/vfio/noiommu-N`), region info and
//! mappings, the command register through the config region, and dma-bufs of a region's ranges
//! (`VFIO_DEVICE_FEATURE_DMA_BUF`, encoded by `vfio_dmabuf`).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vfio_bindings::bindings::vfio::{vfio_group_status, vfio_region_info, VFIO_GROUP_FLAGS_VIABLE};
use vfio_dmabuf::{encode_dma_buf_request, DeviceFeatureIoctl, DmaRange, SysDeviceFeature};

use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::pci::PciDevice;

pub use vfio_bindings::bindings::vfio::{VFIO_TYPE1v2_IOMMU, VFIO_NOIOMMU_IOMMU};

const fn vfio_io(nr: libc::c_ulong) -> libc::c_ulong {
    (b';' as libc::c_ulong) << 8 | (100 + nr)
}
const VFIO_GET_API_VERSION: libc::c_ulong = vfio_io(0);
const VFIO_CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
const VFIO_SET_IOMMU: libc::c_ulong = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);

/// VFIO's region index of PCI config space.
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;

/// Binds `dev` to `vfio-pci` (driver_override, unbind, drivers_probe) unless it already is, and
/// waits up to `wait` for its IOMMU group link. Returns the group's number.
pub fn bind_vfio_pci(dev: &PciDevice, wait: Duration) -> Result<u32> {
    if dev.driver().as_deref() != Some("vfio-pci") {
        let ov = dev.path.join("driver_override");
        std::fs::write(&ov, "vfio-pci").map_err(Error::io(format!("write {}", ov.display())))?;
        dev.unbind()?;
        let probe = Path::new("/sys/bus/pci/drivers_probe");
        std::fs::write(probe, &dev.bdf).map_err(Error::io(format!(
            "write {} to {}",
            dev.bdf,
            probe.display()
        )))?;
    }
    let t0 = Instant::now();
    loop {
        if dev.driver().as_deref() == Some("vfio-pci") {
            if let Ok(g) = std::fs::read_link(dev.path.join("iommu_group")) {
                let name = g
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return name
                    .parse()
                    .map_err(|_| Error::parse("iommu_group link", name));
            }
        }
        if t0.elapsed() > wait {
            return Err(Error::Timeout {
                what: format!(
                    "{} bound to vfio-pci with an IOMMU group (driver now: {})",
                    dev.bdf,
                    dev.driver().unwrap_or_else(|| "none".into())
                ),
                ms: wait.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The group node of group `n`: `/dev/vfio/noiommu-N` for a no-IOMMU group, else `/dev/vfio/N`.
pub fn group_node(n: u32) -> Option<String> {
    [format!("/dev/vfio/noiommu-{n}"), format!("/dev/vfio/{n}")]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

fn ioctl_val(
    fd: BorrowedFd<'_>,
    req: libc::c_ulong,
    arg: libc::c_ulong,
    what: &str,
) -> Result<i32> {
    // SAFETY: an ioctl whose argument is an integer (no memory passed).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        return Err(Error::last_os(what));
    }
    Ok(r)
}

fn ioctl_ptr<T>(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: &mut T, what: &str) -> Result<i32> {
    // SAFETY: `arg` is a live struct of the type and size the ioctl `req` expects.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        return Err(Error::last_os(what));
    }
    Ok(r)
}

/// An open group attached to its own container with an IOMMU set.
#[derive(Debug)]
pub struct VfioGroup {
    container: File,
    group: File,
}

impl VfioGroup {
    /// Opens `/dev/vfio/vfio` and the group node `path`, checks the group is viable, attaches it
    /// to the container and sets IOMMU type `iommu` (e.g. [`VFIO_NOIOMMU_IOMMU`]).
    pub fn open(path: &str, iommu: u32) -> Result<Self> {
        let rw = |p: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(Error::io(format!("open {p}")))
        };
        let container = rw("/dev/vfio/vfio")?;
        ioctl_val(
            container.as_fd(),
            VFIO_GET_API_VERSION,
            0,
            "VFIO_GET_API_VERSION",
        )?;
        let ext = ioctl_val(
            container.as_fd(),
            VFIO_CHECK_EXTENSION,
            libc::c_ulong::from(iommu),
            "VFIO_CHECK_EXTENSION",
        )?;
        if ext != 1 {
            return Err(Error::Unsupported(format!(
                "the VFIO container has no IOMMU type {iommu} (VFIO_CHECK_EXTENSION = {ext})"
            )));
        }
        let group = rw(path)?;
        let mut status = vfio_group_status {
            argsz: std::mem::size_of::<vfio_group_status>() as u32,
            flags: 0,
        };
        ioctl_ptr(
            group.as_fd(),
            VFIO_GROUP_GET_STATUS,
            &mut status,
            "VFIO_GROUP_GET_STATUS",
        )?;
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::Unsupported(format!(
                "VFIO group {path} is not viable"
            )));
        }
        let mut cfd = container.as_raw_fd();
        ioctl_ptr(
            group.as_fd(),
            VFIO_GROUP_SET_CONTAINER,
            &mut cfd,
            "VFIO_GROUP_SET_CONTAINER",
        )?;
        ioctl_val(
            container.as_fd(),
            VFIO_SET_IOMMU,
            libc::c_ulong::from(iommu),
            "VFIO_SET_IOMMU",
        )?;
        Ok(VfioGroup { container, group })
    }

    /// A new device fd for `bdf` (VFIO_GROUP_GET_DEVICE_FD). Closing the last fd of a device
    /// (and unmapping its regions) closes the device, which revokes its dma-bufs.
    pub fn device(&self, bdf: &str) -> Result<VfioDevice> {
        let name = CString::new(bdf).map_err(|e| Error::parse("BDF", e.to_string()))?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let fd = unsafe {
            libc::ioctl(
                self.group.as_raw_fd(),
                VFIO_GROUP_GET_DEVICE_FD as _,
                name.as_ptr(),
            )
        };
        if fd < 0 {
            return Err(Error::last_os(format!("VFIO_GROUP_GET_DEVICE_FD {bdf}")));
        }
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(VfioDevice { fd })
    }

    /// The container fd.
    pub fn container(&self) -> BorrowedFd<'_> {
        self.container.as_fd()
    }
}

/// An open VFIO device.
#[derive(Debug)]
pub struct VfioDevice {
    fd: OwnedFd,
}

impl VfioDevice {
    /// The device fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// VFIO_DEVICE_GET_REGION_INFO of region `index`.
    pub fn region_info(&self, index: u32) -> Result<vfio_region_info> {
        let mut ri = vfio_region_info {
            argsz: std::mem::size_of::<vfio_region_info>() as u32,
            index,
            ..Default::default()
        };
        ioctl_ptr(
            self.fd(),
            VFIO_DEVICE_GET_REGION_INFO,
            &mut ri,
            &format!("VFIO_DEVICE_GET_REGION_INFO {index}"),
        )?;
        Ok(ri)
    }

    /// Maps all of region `index` shared and read-write.
    pub fn map_region(&self, index: u32) -> Result<Mapping> {
        let ri = self.region_info(index)?;
        Mapping::new_at(
            ri.size as usize,
            libc::MAP_SHARED,
            self.fd.as_raw_fd(),
            ri.offset,
            &format!("VFIO region {index}"),
        )
    }

    /// Reads the 16-bit PCI command register through the config region.
    pub fn command(&self) -> Result<u16> {
        let off = self.region_info(VFIO_PCI_CONFIG_REGION_INDEX)?.offset;
        let mut b = [0u8; 2];
        let f = self.as_file()?;
        f.read_exact_at(&mut b, off + crate::pci::PCI_COMMAND)
            .map_err(Error::io("read the command register through VFIO"))?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes the 16-bit PCI command register through the config region (VFIO sees the change
    /// and, for Memory Space off, revokes the device's dma-bufs).
    pub fn set_command(&self, v: u16) -> Result<()> {
        let off = self.region_info(VFIO_PCI_CONFIG_REGION_INDEX)?.offset;
        let f = self.as_file()?;
        f.write_all_at(&v.to_le_bytes(), off + crate::pci::PCI_COMMAND)
            .map_err(Error::io("write the command register through VFIO"))
    }

    fn as_file(&self) -> Result<File> {
        let fd = self
            .fd
            .try_clone()
            .map_err(Error::io("dup the VFIO device fd"))?;
        Ok(File::from(fd))
    }

    /// One dma-buf of `ranges` (offset, length) of region `index`, in that order
    /// (VFIO_DEVICE_FEATURE with GET | DMA_BUF, O_CLOEXEC | O_RDWR). The errno on failure.
    pub fn export_dma_buf(
        &self,
        index: u32,
        ranges: &[(u64, u64)],
    ) -> std::result::Result<OwnedFd, i32> {
        let ranges: Vec<DmaRange> = ranges
            .iter()
            .map(|&(offset, len)| DmaRange { offset, len })
            .collect();
        let mut req =
            encode_dma_buf_request(index, (libc::O_CLOEXEC | libc::O_RDWR) as u32, &ranges)
                .ok_or(libc::E2BIG)?;
        let fd = SysDeviceFeature
            .device_feature(self.fd(), &mut req)
            .map_err(|e| e.0)?;
        // SAFETY: the ioctl returned a new dma-buf fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// `/proc/self/fdinfo/<fd>`'s `size:` and `exp_name:` of a dma-buf.
pub fn dmabuf_fdinfo(fd: BorrowedFd<'_>) -> (Option<u64>, Option<String>) {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .unwrap_or_default();
    let mut size = None;
    let mut name = None;
    for l in text.lines() {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim() {
                "size" => size = v.trim().parse().ok(),
                "exp_name" => name = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    (size, name)
}
