//! virtio-gpu behind the virtio-pci transport, driven like a guest driver does: capabilities,
//! feature negotiation, MSI-X, queue setup in guest memory, DRIVER_OK, notify, used ring and
//! the queue's irqfd. The MSI router and the ioeventfd registrar are fakes that keep state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pci::PciDevice;
use crate::virtio::{
    IoEventRegistrar, VirtioGpu, VirtioPciDevice, MSIX_TABLE_OFFSET, NOTIFY_OFFSET,
};
use virtio_gpu_blob::display::HeadlessDisplay;
use virtio_gpu_blob::protocol::{encode, resp};
use virtio_gpu_blob::{BlobExporter, GpuConfig, GpuDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// No ioeventfds: notify writes trap into the transport, which signals the same eventfd.
struct NoIoEvents;

impl IoEventRegistrar for NoIoEvents {
    fn register(&self, _fd: &EventFd, addr: u64) -> Result<(), crate::Error> {
        Err(crate::Error::IoEventFd {
            op: "KVM_IOEVENTFD",
            addr,
            source: vmm_sys_util::errno::Error::new(libc::ENODEV),
        })
    }
    fn unregister(&self, _fd: &EventFd, _addr: u64) -> Result<(), crate::Error> {
        Ok(())
    }
}

fn w(dev: &mut VirtioPciDevice, off: u64, v: u64, len: usize) {
    dev.write_bar(0, off, &v.to_le_bytes()[..len]);
}

fn r(dev: &mut VirtioPciDevice, off: u64, len: usize) -> u64 {
    let mut d = [0u8; 8];
    dev.read_bar(0, off, &mut d[..len]);
    u64::from_le_bytes(d)
}

#[test]
fn guest_driver_gets_display_info_and_an_msix_interrupt() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let gpu = GpuDevice::new(
        GpuConfig {
            width: 800,
            height: 600,
            ..GpuConfig::default()
        },
        Box::new(HeadlessDisplay::default()),
        Box::new(BlobExporter::new()),
    );
    let mut dev = VirtioPciDevice::new(
        Box::new(VirtioGpu::new(gpu)),
        mem.clone(),
        Arc::new(crate::test_utils::FakeMsiRouter::default()),
        Arc::new(NoIoEvents),
    )
    .unwrap();
    let moved = dev.program_bar(0, 0xe000_0000).unwrap();
    dev.move_bar(&moved).unwrap();

    // Device config: num_scanouts = 1.
    assert_eq!(r(&mut dev, 0x2008, 4), 1);
    // Reset, ACKNOWLEDGE | DRIVER, features.
    w(&mut dev, 0x14, 0, 1);
    w(&mut dev, 0x14, 3, 1);
    w(&mut dev, 0x00, 0, 4);
    let low = r(&mut dev, 0x04, 4);
    assert_eq!(low, 0b1010, "EDID and RESOURCE_BLOB offered");
    w(&mut dev, 0x08, 0, 4);
    w(&mut dev, 0x0c, low, 4);
    w(&mut dev, 0x08, 1, 4);
    w(&mut dev, 0x0c, 1, 4); // VERSION_1
    w(&mut dev, 0x14, 0xb, 1);
    assert_eq!(r(&mut dev, 0x14, 1), 0xb);
    // MSI-X on, vector 1 for the control queue.
    let msix_ctrl_reg = {
        let mut off = (dev.read_config_register(13) & 0xff) as usize;
        loop {
            let d = dev.read_config_register(off / 4);
            if d & 0xff == 0x11 {
                break off / 4;
            }
            off = ((d >> 8) & 0xff) as usize;
        }
    };
    dev.write_config_register(msix_ctrl_reg, 2, &0x8000u16.to_le_bytes());
    w(&mut dev, MSIX_TABLE_OFFSET + 16, 0xfee0_0000, 4);
    w(&mut dev, MSIX_TABLE_OFFSET + 16 + 8, 0x41, 4);
    w(&mut dev, MSIX_TABLE_OFFSET + 16 + 12, 0, 4);
    // Control queue: 16 entries at 0x10000.
    w(&mut dev, 0x16, 0, 2);
    w(&mut dev, 0x18, 16, 2);
    w(&mut dev, 0x20, 0x10000, 8);
    w(&mut dev, 0x28, 0x11000, 8);
    w(&mut dev, 0x30, 0x12000, 8);
    w(&mut dev, 0x1a, 1, 2);
    assert_eq!(r(&mut dev, 0x1a, 2), 1);
    w(&mut dev, 0x1c, 1, 2);
    w(&mut dev, 0x14, 0xf, 1);
    assert!(dev.is_active());

    // One GET_DISPLAY_INFO request.
    let req = encode::fenced(encode::get_display_info(), 9);
    mem.write_slice(&req, GuestAddress(0x20000)).unwrap();
    let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let at = 0x10000 + i * 16;
        mem.write_obj(addr, GuestAddress(at)).unwrap();
        mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    };
    desc(0, 0x20000, req.len() as u32, 1, 1);
    desc(1, 0x21000, 512, 2, 0);
    mem.write_obj(0u16, GuestAddress(0x11004)).unwrap();
    mem.write_obj(1u16, GuestAddress(0x11002)).unwrap();
    w(&mut dev, NOTIFY_OFFSET, 0, 2);

    let (irqfd, _) = dev.vector_irqfd(1).unwrap();
    let start = Instant::now();
    loop {
        if irqfd.read().is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no MSI-X interrupt"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(mem.read_obj::<u16>(GuestAddress(0x12002)).unwrap(), 1);
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(0x12004 + 4)).unwrap(),
        408,
        "used length = display info size"
    );
    let resp_type: u32 = mem.read_obj(GuestAddress(0x21000)).unwrap();
    assert_eq!(resp_type, resp::OK_DISPLAY_INFO);
    let fence: u64 = mem.read_obj(GuestAddress(0x21008)).unwrap();
    assert_eq!(fence, 9);
    let width: u32 = mem.read_obj(GuestAddress(0x21000 + 24 + 8)).unwrap();
    assert_eq!(width, 800);

    // Reset stops the worker; the device can be brought up again.
    w(&mut dev, 0x14, 0, 1);
    assert!(!dev.is_active());
}
