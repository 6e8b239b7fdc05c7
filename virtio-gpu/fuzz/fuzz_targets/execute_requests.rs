//! Sequences of requests (length-prefixed) decoded and executed by a device over 4 MiB of
//! guest memory: no panic, no unbounded allocation, every request gets a known response.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use virtio_gpu_blob::display::HeadlessDisplay;
use virtio_gpu_blob::protocol::decode_request;
use virtio_gpu_blob::{BlobExporter, GpuConfig, GpuDevice};
use vm_memory::{GuestAddress, GuestMemoryMmap};

type Device = GpuDevice<Arc<GuestMemoryMmap>>;

fn device() -> &'static Mutex<Device> {
    static DEV: OnceLock<Mutex<Device>> = OnceLock::new();
    DEV.get_or_init(|| {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let config = GpuConfig {
            max_hostmem: 64 << 20,
            max_resource_bytes: 16 << 20,
            max_resources: 64,
            ..GpuConfig::default()
        };
        let mut dev = GpuDevice::new(
            config,
            Box::new(HeadlessDisplay::default()),
            Box::new(BlobExporter::new()),
        );
        dev.activate(Arc::new(mem));
        Mutex::new(dev)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut dev = device().lock().unwrap();
    dev.reset();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let req = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let ty = match decode_request(req) {
            Ok(r) => dev.handle(&r).response_type(),
            Err(e) => e.response_type(),
        };
        assert!((0x1100..=0x1106).contains(&ty) || (0x1200..=0x1205).contains(&ty));
    }
});
