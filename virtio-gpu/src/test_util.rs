//! Test helpers: a virtqueue driver writing real descriptors into guest memory, a fake
//! dma-buf exporter that follows the kernel's page-alignment rules, and a recording display.
//! Used by unit tests, benches and the fuzz target (feature `test-utils`).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory of the tests.
pub type GuestMem = GuestMemoryMmap;
/// The device as the tests drive it.
pub type TestGpu = GpuDevice<Arc<GuestMem>>;

use crate::display::{CursorState, DisplayBackend, DisplayError, ScanoutFrame};
use vfio_dmabuf::{DeviceId, DmaBufError, Errno, KernelOp};

use crate::exporter::{BlobMemory, DmaBuf, ExportKind, PixelReadError, RegionKey};
use crate::protocol::{BlobEntry, Rect};
use crate::{GpuDevice, QueueKind};

/// Guest-physical base of the fake passthrough BAR (device 1, region 2).
pub const BAR_BASE: u64 = 0xe000_0000;
/// Size of that BAR.
pub const BAR_SIZE: u64 = 16 << 20;
/// Guest-physical base of a second region of the same device (region 4).
pub const BAR2_BASE: u64 = 0xf000_0000;
/// Size of the second region.
pub const BAR2_SIZE: u64 = 1 << 20;
/// Page size the fake kernel enforces.
pub const PAGE: u64 = 4096;

/// Mutable state of the fake exporter, shared with the test.
#[derive(Debug, Default)]
pub struct FakeExporterState {
    /// Every successful export, in order.
    pub exports: Vec<(ExportKind, Vec<BlobEntry>)>,
    /// The other end of each dma-buf handed out (a socket pair stands in for the dma-buf):
    /// it reads end-of-file once the holder closed the dma-buf.
    peers: Vec<UnixStream>,
    /// Whether udmabuf exports work.
    pub udmabuf: bool,
    /// Error returned by the next export.
    pub fail_next: Option<DmaBufError>,
    /// Reads of BAR memory through `read_passthrough`.
    pub passthrough_reads: u64,
    /// Generation of the BAR memory: VFIO exports made at another one are stale.
    pub generation: u64,
    /// Whether the device decodes its BARs (off: exports refused, reads fail, like vfio-pci).
    pub decoding: bool,
}

impl FakeExporterState {
    /// Dma-bufs handed out and not closed yet.
    pub fn live(&mut self) -> usize {
        self.peers.retain_mut(|p| {
            let mut b = [0u8; 1];
            // Non-blocking: WouldBlock while the dma-buf end is open, 0 bytes once closed.
            !matches!(p.read(&mut b), Ok(0))
        });
        self.peers.len()
    }
}

/// A fake exporter: BAR memory is a host vector; exports check page alignment and bounds like
/// `VFIO_DEVICE_FEATURE_DMA_BUF`/`UDMABUF_CREATE_LIST` (EINVAL -> guest fault) and hand out a
/// `/dev/null` fd as the dma-buf.
#[derive(Clone)]
pub struct FakeExporter {
    /// Shared state.
    pub state: Arc<Mutex<FakeExporterState>>,
    /// Contents of BAR (region 2) then BAR2 (region 4).
    pub bars: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
    mem: Option<GuestMem>,
}

impl Default for FakeExporter {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeExporter {
    /// Without guest memory (udmabuf mappings then read zeros).
    pub fn new() -> Self {
        FakeExporter {
            state: Arc::new(Mutex::new(FakeExporterState {
                udmabuf: true,
                decoding: true,
                ..Default::default()
            })),
            bars: Arc::new(Mutex::new((
                vec![0; BAR_SIZE as usize],
                vec![0; BAR2_SIZE as usize],
            ))),
            mem: None,
        }
    }

    /// With guest memory, so udmabuf CPU mappings read RAM.
    pub fn with_memory(mem: GuestMem) -> Self {
        FakeExporter {
            mem: Some(mem),
            ..Self::new()
        }
    }

    /// Writes bytes into the fake BAR memory at guest-physical `addr`.
    pub fn write_bar(&self, addr: u64, bytes: &[u8]) {
        let mut bars = self.bars.lock().unwrap();
        let (vec, base) = if addr >= BAR2_BASE {
            (&mut bars.1, BAR2_BASE)
        } else {
            (&mut bars.0, BAR_BASE)
        };
        let off = (addr - base) as usize;
        vec[off..off + bytes.len()].copy_from_slice(bytes);
    }

    fn read_gpa(&self, addr: u64, buf: &mut [u8]) -> Result<(), PixelReadError> {
        let len = buf.len();
        let err = |reason: &str| PixelReadError {
            offset: addr,
            len,
            reason: reason.into(),
        };
        if let Some(r) = self.locate(addr, buf.len() as u64) {
            let bars = self.bars.lock().unwrap();
            let (vec, base) = if r.index == 4 {
                (&bars.1, BAR2_BASE)
            } else {
                (&bars.0, BAR_BASE)
            };
            let off = (addr - base) as usize;
            buf.copy_from_slice(&vec[off..off + buf.len()]);
            return Ok(());
        }
        match &self.mem {
            Some(m) => m
                .read_slice(buf, GuestAddress(addr))
                .map_err(|_| err("not in guest RAM")),
            None => Err(err("no guest memory")),
        }
    }
}

fn within(addr: u64, len: u64, base: u64, size: u64) -> bool {
    addr >= base && addr.checked_add(len).is_some_and(|end| end <= base + size)
}

/// The fake's regions: device 1, region 2 (`BAR_BASE`) and region 4 (`BAR2_BASE`).
pub fn fake_region(index: u32) -> RegionKey {
    RegionKey {
        device: DeviceId(1),
        index,
    }
}

impl BlobMemory for FakeExporter {
    fn locate(&self, addr: u64, len: u64) -> Option<RegionKey> {
        if within(addr, len, BAR_BASE, BAR_SIZE) {
            Some(fake_region(2))
        } else if within(addr, len, BAR2_BASE, BAR2_SIZE) {
            Some(fake_region(4))
        } else {
            None
        }
    }

    fn export(&self, kind: ExportKind, entries: &[BlobEntry]) -> Result<DmaBuf, DmaBufError> {
        let mut st = self.state.lock().unwrap();
        if let Some(e) = st.fail_next.take() {
            return Err(e);
        }
        if kind == ExportKind::Udmabuf && !st.udmabuf {
            return Err(DmaBufError::NoExporter("udmabuf"));
        }
        if let (ExportKind::Vfio(r), false) = (kind, st.decoding) {
            return Err(DmaBufError::NotDecoding {
                device: r.device,
                index: r.index,
            });
        }
        let op = match kind {
            ExportKind::Udmabuf => KernelOp::UdmabufCreateList,
            ExportKind::Vfio(_) => KernelOp::VfioDmaBufExport,
        };
        if entries
            .iter()
            .any(|e| e.addr % PAGE != 0 || e.len % PAGE != 0)
        {
            return Err(DmaBufError::Kernel {
                op,
                errno: Errno(libc::EINVAL),
            });
        }
        let host = |e: std::io::Error| DmaBufError::Kernel {
            op,
            errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
        };
        let (dmabuf, peer) = UnixStream::pair().map_err(host)?;
        peer.set_nonblocking(true).map_err(host)?;
        st.exports.push((kind, entries.to_vec()));
        st.peers.push(peer);
        Ok(DmaBuf {
            fd: OwnedFd::from(dmabuf),
            size: entries.iter().map(|e| e.len).sum(),
            kind,
            generation: st.generation,
        })
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaBufError> {
        let decoding = {
            let mut st = self.state.lock().unwrap();
            st.passthrough_reads += 1;
            st.decoding
        };
        match self.locate(addr, buf.len() as u64) {
            Some(r) if !decoding => Err(DmaBufError::NotDecoding {
                device: r.device,
                index: r.index,
            }),
            Some(_) => self.read_gpa(addr, buf).map_err(|_| DmaBufError::Kernel {
                op: KernelOp::DeviceRead,
                errno: Errno(libc::EIO),
            }),
            None => Err(DmaBufError::NotInRegion { entry: 0, addr }),
        }
    }

    fn is_current(&self, blob: &DmaBuf) -> bool {
        let st = self.state.lock().unwrap();
        match blob.kind {
            ExportKind::Udmabuf => true,
            ExportKind::Vfio(_) => st.decoding && blob.generation == st.generation,
        }
    }
}

/// What a recording display saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayEvent {
    /// set_scanout
    Scanout {
        /// Scanout id.
        id: u32,
        /// Frame geometry, `None` when disabled.
        frame: Option<FrameInfo>,
    },
    /// flush, with the frame's pixels as RGBA read at flush time.
    Flush {
        /// Scanout id.
        id: u32,
        /// Frame geometry.
        frame: FrameInfo,
        /// Flushed rectangle.
        rect: Rect,
        /// The whole visible frame as RGBA.
        rgba: Vec<u8>,
    },
    /// cursor
    Cursor(CursorState),
}

/// Geometry of a frame handed to the display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// A dma-buf came with it.
    pub dmabuf: bool,
    /// DRM fourcc.
    pub fourcc: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Stride.
    pub stride: u32,
    /// Offset.
    pub offset: u64,
}

impl FrameInfo {
    fn of(f: &ScanoutFrame<'_>) -> Self {
        FrameInfo {
            dmabuf: f.dmabuf.is_some(),
            fourcc: f.fourcc,
            width: f.width,
            height: f.height,
            stride: f.stride,
            offset: f.offset,
        }
    }
}

/// A display that records events (pixels read through the frame at flush time).
#[derive(Clone, Default)]
pub struct RecordingDisplay {
    /// The events.
    pub events: Arc<Mutex<Vec<DisplayEvent>>>,
}

impl RecordingDisplay {
    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<DisplayEvent> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl DisplayBackend for RecordingDisplay {
    fn set_scanout(
        &mut self,
        id: u32,
        frame: Option<&ScanoutFrame<'_>>,
    ) -> Result<(), DisplayError> {
        self.events.lock().unwrap().push(DisplayEvent::Scanout {
            id,
            frame: frame.map(FrameInfo::of),
        });
        Ok(())
    }

    fn flush(&mut self, id: u32, frame: &ScanoutFrame<'_>, rect: Rect) -> Result<(), DisplayError> {
        let rgba = frame.to_rgba()?;
        self.events.lock().unwrap().push(DisplayEvent::Flush {
            id,
            frame: FrameInfo::of(frame),
            rect,
            rgba,
        });
        Ok(())
    }

    fn cursor(&mut self, _: u32, c: CursorState) {
        self.events.lock().unwrap().push(DisplayEvent::Cursor(c));
    }
}

/// Queue size used by the driver.
pub const QUEUE_SIZE: u16 = 64;
/// Guest memory size of the driver.
pub const DRIVER_MEM_SIZE: u64 = 64 << 20;
/// Where requests are written.
pub const REQ_ADDR: u64 = 0x1_0000;
/// Where responses are written.
pub const RESP_ADDR: u64 = 0x7_0000;
/// First address free for test data (backing pages).
pub const DATA_ADDR: u64 = 0x10_0000;

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

/// A virtio driver in miniature: writes descriptors, avail entries and requests into guest
/// memory, lets the device process the queue and reads back the used ring.
pub struct TestDriver {
    /// Guest memory (RAM at 0..DRIVER_MEM_SIZE).
    pub mem: GuestMem,
    queues: [Queue; 2],
    avail_idx: [u16; 2],
    used_idx: [u16; 2],
}

/// One descriptor for [`TestDriver::submit_chain`].
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    /// Guest address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

impl Default for TestDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDriver {
    /// Fresh memory and two queues (control at 0x0, cursor at 0x2000).
    pub fn new() -> Self {
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), DRIVER_MEM_SIZE as usize)])
            .expect("test memory");
        let mk = |base: u64| {
            let mut q = Queue::new(QUEUE_SIZE).expect("queue");
            let desc = base;
            let avail = base + 16 * u64::from(QUEUE_SIZE);
            let used = (avail + 6 + 2 * u64::from(QUEUE_SIZE) + 3) & !3;
            q.set_size(QUEUE_SIZE);
            q.set_desc_table_address(Some(desc as u32), Some(0));
            q.set_avail_ring_address(Some(avail as u32), Some(0));
            q.set_used_ring_address(Some(used as u32), Some(0));
            q.set_ready(true);
            q
        };
        TestDriver {
            mem,
            queues: [mk(0), mk(0x2000)],
            avail_idx: [0; 2],
            used_idx: [0; 2],
        }
    }

    /// A device over this driver's memory, activated.
    pub fn device(
        &self,
        config: crate::GpuConfig,
        display: Box<dyn DisplayBackend>,
        exporter: Box<dyn BlobMemory>,
    ) -> TestGpu {
        let mut dev = GpuDevice::new(config, display, exporter);
        dev.activate(Arc::new(self.mem.clone()));
        dev
    }

    fn qi(kind: QueueKind) -> usize {
        match kind {
            QueueKind::Control => 0,
            QueueKind::Cursor => 1,
        }
    }

    /// Submits `req` with a `resp_len`-byte response buffer; returns the bytes the device
    /// wrote (per the used ring's length).
    pub fn submit(
        &mut self,
        dev: &mut TestGpu,
        kind: QueueKind,
        req: &[u8],
        resp_len: u32,
    ) -> Vec<u8> {
        self.mem
            .write_slice(req, GuestAddress(REQ_ADDR))
            .expect("request fits");
        let mut descs = vec![Desc {
            addr: REQ_ADDR,
            len: req.len() as u32,
            write: false,
        }];
        if resp_len > 0 {
            descs.push(Desc {
                addr: RESP_ADDR,
                len: resp_len,
                write: true,
            });
        }
        let len = self.submit_chain(dev, kind, &descs);
        let mut out = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut out, GuestAddress(RESP_ADDR))
            .expect("response readable");
        out
    }

    /// Submits a control request expecting a response; returns the response type.
    pub fn control(&mut self, dev: &mut TestGpu, req: &[u8]) -> u32 {
        let out = self.submit(dev, QueueKind::Control, req, 2048);
        assert!(out.len() >= 24, "short response {out:?}");
        u32::from_le_bytes(out[0..4].try_into().unwrap())
    }

    /// Submits an arbitrary chain (descriptors 0..n); returns the used length.
    pub fn submit_chain(&mut self, dev: &mut TestGpu, kind: QueueKind, descs: &[Desc]) -> u32 {
        let q = Self::qi(kind);
        let base = if q == 0 { 0 } else { 0x2000 };
        let avail = base + 16 * u64::from(QUEUE_SIZE);
        let used = (avail + 6 + 2 * u64::from(QUEUE_SIZE) + 3) & !3;
        for (i, d) in descs.iter().enumerate() {
            let mut flags = if d.write { VRING_DESC_F_WRITE } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            let at = base + 16 * i as u64;
            let m = &self.mem;
            m.write_obj(d.addr.to_le(), GuestAddress(at)).unwrap();
            m.write_obj(d.len.to_le(), GuestAddress(at + 8)).unwrap();
            m.write_obj(flags.to_le(), GuestAddress(at + 12)).unwrap();
            m.write_obj(((i + 1) as u16).to_le(), GuestAddress(at + 14))
                .unwrap();
        }
        let slot = u64::from(self.avail_idx[q] % QUEUE_SIZE);
        self.mem
            .write_obj(0u16, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q].to_le(), GuestAddress(avail + 2))
            .unwrap();
        dev.process_queue(&mut self.queues[q], kind)
            .expect("queue processing");
        let used_idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        assert_eq!(
            used_idx,
            self.used_idx[q].wrapping_add(1),
            "device used exactly one chain"
        );
        let slot = u64::from(self.used_idx[q] % QUEUE_SIZE);
        self.used_idx[q] = used_idx;
        let id: u32 = self
            .mem
            .read_obj(GuestAddress(used + 4 + 8 * slot))
            .unwrap();
        assert_eq!(id, 0, "used id is the head");
        self.mem
            .read_obj(GuestAddress(used + 4 + 8 * slot + 4))
            .unwrap()
    }
}
