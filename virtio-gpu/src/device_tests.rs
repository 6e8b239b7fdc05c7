//! Device tests driven through real virtqueues in guest memory (see `test_util::TestDriver`).

use vm_memory::{Bytes, GuestAddress};

use crate::backing::BlobPath;
use vfio_dmabuf::{DmaBufError, Errno, KernelOp};

use crate::exporter::ExportKind;
use crate::format::FORMATS;
use crate::protocol::encode::*;
use crate::protocol::{cmd, resp, BlobEntry, CursorPos, Rect, ScanoutBlob, MAX_MEM_ENTRIES};
use crate::test_util::*;
use crate::{GpuConfig, QueueKind};

const XRGB: u32 = 2; // VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM
const P: u64 = 4096;

struct Rig {
    drv: TestDriver,
    dev: TestGpu,
    display: RecordingDisplay,
    exporter: FakeExporter,
}

fn rig_with(config: GpuConfig) -> Rig {
    let drv = TestDriver::new();
    let display = RecordingDisplay::default();
    let exporter = FakeExporter::with_memory(drv.mem.clone());
    let dev = drv.device(
        config,
        Box::new(display.clone()),
        Box::new(exporter.clone()),
    );
    Rig {
        drv,
        dev,
        display,
        exporter,
    }
}

fn rig() -> Rig {
    rig_with(GpuConfig::default())
}

impl Rig {
    fn ctl(&mut self, req: Vec<u8>) -> u32 {
        self.drv.control(&mut self.dev, &req)
    }

    fn write(&self, addr: u64, bytes: &[u8]) {
        self.drv.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    fn last_flush_rgba(&self) -> Vec<u8> {
        let evs = self.display.take();
        match evs.into_iter().rev().find_map(|e| match e {
            DisplayEvent::Flush { rgba, .. } => Some(rgba),
            _ => None,
        }) {
            Some(rgba) => rgba,
            None => panic!("no flush reached the display"),
        }
    }
}

fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect {
        x,
        y,
        width,
        height,
    }
}

fn entry(addr: u64, len: u64) -> BlobEntry {
    BlobEntry::new(addr, len)
}

/// XRGB pixel i of a pattern, as bytes in memory (B, G, R, X).
fn px(i: u32) -> [u8; 4] {
    [(i * 7) as u8, (i * 13) as u8, (i * 29 + 1) as u8, 0]
}

fn rgba(i: u32) -> [u8; 4] {
    let p = px(i);
    [p[2], p[1], p[0], 255]
}

fn pattern(n: u32) -> Vec<u8> {
    (0..n).flat_map(px).collect()
}

fn expected_rgba(n: u32) -> Vec<u8> {
    (0..n).flat_map(rgba).collect()
}

fn resp_type(out: &[u8]) -> u32 {
    u32::from_le_bytes(out[0..4].try_into().unwrap())
}

// ---- GET_DISPLAY_INFO, GET_EDID, fences, framing ----

#[test]
fn display_info_reports_the_configured_mode() {
    let mut r = rig_with(GpuConfig {
        width: 1024,
        height: 768,
        ..GpuConfig::default()
    });
    let out = r
        .drv
        .submit(&mut r.dev, QueueKind::Control, &get_display_info(), 2048);
    assert_eq!(out.len(), crate::protocol::DISPLAY_INFO_SIZE);
    assert_eq!(resp_type(&out), resp::OK_DISPLAY_INFO);
    let word = |i: usize| u32::from_le_bytes(out[24 + 4 * i..28 + 4 * i].try_into().unwrap());
    assert_eq!(
        (word(0), word(1), word(2), word(3), word(4)),
        (0, 0, 1024, 768, 1)
    );
    // Scanout 1 is absent.
    assert_eq!(word(6 + 4), 0);
}

#[test]
fn edid_for_scanout_0_and_invalid_parameter_beyond() {
    let mut r = rig();
    let out = r
        .drv
        .submit(&mut r.dev, QueueKind::Control, &get_edid(0), 2048);
    assert_eq!(resp_type(&out), resp::OK_EDID);
    assert_eq!(u32::from_le_bytes(out[24..28].try_into().unwrap()), 128);
    assert_eq!(&out[32..40], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    assert_eq!(r.ctl(get_edid(1)), resp::ERR_INVALID_PARAMETER);
    assert_eq!(r.ctl(get_edid(u32::MAX)), resp::ERR_INVALID_PARAMETER);
}

#[test]
fn fences_are_echoed_on_success_and_on_error() {
    let mut r = rig();
    for (req, want) in [
        (fenced(get_display_info(), 42), resp::OK_DISPLAY_INFO),
        (fenced(unref(77), 43), resp::ERR_INVALID_RESOURCE_ID),
    ] {
        let fence = u64::from_le_bytes(req[8..16].try_into().unwrap());
        let out = r.drv.submit(&mut r.dev, QueueKind::Control, &req, 2048);
        assert_eq!(resp_type(&out), want);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), fence);
    }
}

#[test]
fn unknown_3d_and_truncated_requests() {
    let mut r = rig();
    assert_eq!(r.ctl(header(0x4242, 0, 0)), resp::ERR_UNSPEC);
    assert_eq!(
        r.ctl(header(cmd::FIRST_3D, 0, 0)),
        resp::ERR_INVALID_CONTEXT_ID
    );
    assert_eq!(
        r.ctl(header(cmd::LAST_3D, 0, 0)),
        resp::ERR_INVALID_CONTEXT_ID
    );
    assert_eq!(r.ctl(header(cmd::GET_CAPSET_INFO, 0, 0)), resp::ERR_UNSPEC);
    // Header only, body missing.
    assert_eq!(
        r.ctl(header(cmd::RESOURCE_CREATE_2D, 0, 0)),
        resp::ERR_UNSPEC
    );
    // Not even a header.
    assert_eq!(r.ctl(vec![1, 2, 3]), resp::ERR_UNSPEC);
    assert_eq!(r.ctl(vec![]), resp::ERR_UNSPEC);
}

#[test]
fn request_split_over_descriptors_is_reassembled() {
    let mut r = rig();
    let req = create_2d(5, XRGB, 4, 4);
    r.write(REQ_ADDR, &req[..10]);
    r.write(REQ_ADDR + 0x1000, &req[10..]);
    let len = r.drv.submit_chain(
        &mut r.dev,
        QueueKind::Control,
        &[
            Desc {
                addr: REQ_ADDR,
                len: 10,
                write: false,
            },
            Desc {
                addr: REQ_ADDR + 0x1000,
                len: (req.len() - 10) as u32,
                write: false,
            },
            Desc {
                addr: RESP_ADDR,
                len: 24,
                write: true,
            },
        ],
    );
    assert_eq!(len, 24);
    assert_eq!(r.dev.resource_count(), 1);
}

#[test]
fn hostile_chains_are_used_with_zero_length_and_the_queue_keeps_working() {
    let mut r = rig();
    // Descriptor outside guest memory.
    let len = r.drv.submit_chain(
        &mut r.dev,
        QueueKind::Control,
        &[
            Desc {
                addr: DRIVER_MEM_SIZE + 0x1000,
                len: 64,
                write: false,
            },
            Desc {
                addr: RESP_ADDR,
                len: 24,
                write: true,
            },
        ],
    );
    assert_eq!(len, 0);
    // Response buffer too small for display info.
    let out = r
        .drv
        .submit(&mut r.dev, QueueKind::Control, &get_display_info(), 100);
    assert!(out.is_empty());
    // No response buffer at all.
    let out = r
        .drv
        .submit(&mut r.dev, QueueKind::Control, &get_display_info(), 0);
    assert!(out.is_empty());
    // Response buffer outside memory.
    r.write(REQ_ADDR, &get_display_info());
    let len = r.drv.submit_chain(
        &mut r.dev,
        QueueKind::Control,
        &[
            Desc {
                addr: REQ_ADDR,
                len: 24,
                write: false,
            },
            Desc {
                addr: u64::MAX - 10,
                len: 2048,
                write: true,
            },
        ],
    );
    assert_eq!(len, 0);
    assert_eq!(r.ctl(get_display_info()), resp::OK_DISPLAY_INFO);
}

// ---- 2D resources ----

fn make_2d(r: &mut Rig, id: u32, w: u32, h: u32, backing: &[BlobEntry]) {
    assert_eq!(r.ctl(create_2d(id, XRGB, w, h)), resp::OK_NODATA);
    assert_eq!(r.ctl(attach_backing(id, backing)), resp::OK_NODATA);
}

#[test]
fn two_d_transfer_scanout_flush_shows_the_guest_pixels() {
    let mut r = rig();
    // 16x8 XRGB = 512 bytes, backing in two entries in reverse address order.
    let pat = pattern(16 * 8);
    r.write(DATA_ADDR + 0x1000, &pat[..256]);
    r.write(DATA_ADDR, &pat[256..]);
    make_2d(
        &mut r,
        1,
        16,
        8,
        &[entry(DATA_ADDR + 0x1000, 256), entry(DATA_ADDR, 256)],
    );
    // The pixels and the two-entry backing table.
    assert_eq!(
        r.dev.hostmem_used(),
        512 + crate::backing::Backing::host_bytes_for(2)
    );
    assert_eq!(
        r.ctl(transfer_to_host_2d(1, rect(0, 0, 16, 8), 0)),
        resp::OK_NODATA
    );
    assert_eq!(r.ctl(set_scanout(0, 1, rect(0, 0, 16, 8))), resp::OK_NODATA);
    assert_eq!(r.ctl(flush(1, rect(0, 0, 16, 8))), resp::OK_NODATA);
    let evs = r.display.take();
    assert!(matches!(
        &evs[0],
        DisplayEvent::Scanout { id: 0, frame: Some(f) } if !f.dmabuf && f.fourcc == FORMATS[1].fourcc && f.stride == 64
    ));
    match &evs[1] {
        DisplayEvent::Flush { rgba, .. } => assert_eq!(rgba, &expected_rgba(128)),
        e => panic!("{e:?}"),
    }
}

#[test]
fn partial_transfer_updates_only_the_rectangle() {
    let mut r = rig();
    make_2d(&mut r, 1, 4, 4, &[entry(DATA_ADDR, 64)]);
    r.write(DATA_ADDR, &pattern(16));
    // Rectangle (1,1) 2x2: offset of its first pixel = 1*16 + 1*4.
    assert_eq!(
        r.ctl(transfer_to_host_2d(1, rect(1, 1, 2, 2), 20)),
        resp::OK_NODATA
    );
    assert_eq!(r.ctl(set_scanout(0, 1, rect(0, 0, 4, 4))), resp::OK_NODATA);
    assert_eq!(r.ctl(flush(1, rect(0, 0, 4, 4))), resp::OK_NODATA);
    let got = r.last_flush_rgba();
    for i in 0..16u32 {
        let (x, y) = (i % 4, i / 4);
        let want = if (1..3).contains(&x) && (1..3).contains(&y) {
            rgba(i)
        } else {
            [0, 0, 0, 255]
        };
        assert_eq!(&got[4 * i as usize..4 * i as usize + 4], &want, "pixel {i}");
    }
}

#[test]
fn scanout_of_a_sub_rectangle_uses_offset_and_stride() {
    let mut r = rig();
    make_2d(&mut r, 1, 4, 4, &[entry(DATA_ADDR, 64)]);
    r.write(DATA_ADDR, &pattern(16));
    assert_eq!(
        r.ctl(transfer_to_host_2d(1, rect(0, 0, 4, 4), 0)),
        resp::OK_NODATA
    );
    assert_eq!(r.ctl(set_scanout(0, 1, rect(2, 1, 2, 3))), resp::OK_NODATA);
    assert_eq!(r.ctl(flush(1, rect(0, 0, 4, 4))), resp::OK_NODATA);
    let got = r.last_flush_rgba();
    let want: Vec<u8> = [6, 7, 10, 11, 14, 15]
        .iter()
        .flat_map(|i| rgba(*i))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn create_2d_rejects_bad_ids_formats_and_sizes() {
    let mut r = rig_with(GpuConfig {
        max_hostmem: 1 << 20,
        max_resource_bytes: 1 << 19,
        ..GpuConfig::default()
    });
    assert_eq!(
        r.ctl(create_2d(0, XRGB, 4, 4)),
        resp::ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(r.ctl(create_2d(1, XRGB, 4, 4)), resp::OK_NODATA);
    assert_eq!(
        r.ctl(create_2d(1, XRGB, 4, 4)),
        resp::ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(r.ctl(create_2d(2, 0, 4, 4)), resp::ERR_INVALID_PARAMETER);
    assert_eq!(r.ctl(create_2d(2, 1000, 4, 4)), resp::ERR_INVALID_PARAMETER);
    assert_eq!(r.ctl(create_2d(2, XRGB, 0, 4)), resp::ERR_INVALID_PARAMETER);
    assert_eq!(r.ctl(create_2d(2, XRGB, 4, 0)), resp::ERR_INVALID_PARAMETER);
    // Sides beyond 16384 are refused, even when the bytes would fit the budget.
    assert_eq!(
        r.ctl(create_2d(2, XRGB, u32::MAX, u32::MAX)),
        resp::ERR_INVALID_PARAMETER
    );
    assert_eq!(
        r.ctl(create_2d(2, XRGB, 16385, 1)),
        resp::ERR_INVALID_PARAMETER
    );
    assert_eq!(
        r.ctl(create_2d(2, XRGB, 1, 65536)),
        resp::ERR_INVALID_PARAMETER
    );
    // The largest sides: 1 GiB, over the cap, refused without allocating.
    assert_eq!(
        r.ctl(create_2d(2, XRGB, 16384, 16384)),
        resp::ERR_OUT_OF_MEMORY
    );
    // Per-resource cap: 512 KiB = 256x512.
    assert_eq!(r.ctl(create_2d(2, XRGB, 256, 513)), resp::ERR_OUT_OF_MEMORY);
    assert_eq!(r.ctl(create_2d(2, XRGB, 256, 512)), resp::OK_NODATA);
    // Total budget: 1 MiB; 64 + 512 KiB used, another 512 KiB does not fit.
    assert_eq!(r.ctl(create_2d(3, XRGB, 256, 512)), resp::ERR_OUT_OF_MEMORY);
    assert_eq!(r.ctl(unref(2)), resp::OK_NODATA);
    assert_eq!(r.ctl(create_2d(3, XRGB, 256, 512)), resp::OK_NODATA);
    assert_eq!(r.dev.hostmem_used(), 64 + (512 << 10));
}

#[test]
fn resource_count_is_bounded() {
    let mut r = rig_with(GpuConfig {
        max_resources: 2,
        ..GpuConfig::default()
    });
    assert_eq!(r.ctl(create_2d(1, XRGB, 1, 1)), resp::OK_NODATA);
    assert_eq!(
        r.ctl(create_blob(2, 1, 0, P, &[entry(DATA_ADDR, P)])),
        resp::OK_NODATA
    );
    assert_eq!(r.ctl(create_2d(3, XRGB, 1, 1)), resp::ERR_OUT_OF_MEMORY);
    assert_eq!(
        r.ctl(create_blob(3, 1, 0, P, &[entry(DATA_ADDR, P)])),
        resp::ERR_OUT_OF_MEMORY
    );
}

#[test]
fn unref_checks_the_id_and_disables_its_scanout() {
    let mut r = rig();
    assert_eq!(r.ctl(unref(9)), resp::ERR_INVALID_RESOURCE_ID);
    assert_eq!(r.ctl(unref(0)), resp::ERR_INVALID_RESOURCE_ID);
    make_2d(&mut r, 1, 4, 4, &[entry(DATA_ADDR, 64)]);
    assert_eq!(r.ctl(set_scanout(0, 1, rect(0, 0, 4, 4))), resp::OK_NODATA);
    r.display.take();
    assert_eq!(r.ctl(unref(1)), resp::OK_NODATA);
    assert_eq!(
        r.display.take(),
        vec![DisplayEvent::Scanout { id: 0, frame: None }]
    );
    assert_eq!(r.dev.hostmem_used(), 0);
    assert_eq!(
        r.ctl(flush(1, rect(0, 0, 1, 1))),
        resp::ERR_INVALID_RESOURCE_ID
    );
}

#[test]
fn attach_backing_checks_id_state_count_and_addresses() {
    let mut r = rig();
    assert_eq!(
        r.ctl(attach_backing(9, &[entry(DATA_ADDR, 64)])),
        resp::ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(r.ctl(create_2d(1, XRGB, 4, 4)), resp::OK_NODATA);
    assert_eq!(r.ctl(attach_backing(1, &[])), resp::ERR_INVALID_PARAMETER);
    // Outside guest RAM, crossing its end, zero length, wrapping.
    for bad in [
        entry(DRIVER_MEM_SIZE, 64),
        entry(DRIVER_MEM_SIZE - 32, 64),
        entry(DATA_ADDR, 0),
        entry(u64::MAX - 8, 64),
        entry(BAR_BASE, 64), // a BAR is no backing for a 2D resource
    ] {
        assert_eq!(
            r.ctl(attach_backing(1, &[entry(DATA_ADDR, 64), bad])),
            resp::ERR_UNSPEC,
            "{bad:?}"
        );
    }
    // nr_entries beyond the limit, and a count larger than the bytes sent.
    let mut req = attach_backing(1, &[entry(DATA_ADDR, 64)]);
    req[28..32].copy_from_slice(&(MAX_MEM_ENTRIES + 1).to_le_bytes());
    assert_eq!(r.ctl(req.clone()), resp::ERR_INVALID_PARAMETER);
    req[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(r.ctl(req.clone()), resp::ERR_INVALID_PARAMETER);
    req[28..32].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(r.ctl(req), resp::ERR_UNSPEC);
    // The maximum count is accepted.
    let many: Vec<BlobEntry> = (0..MAX_MEM_ENTRIES).map(|_| entry(DATA_ADDR, 4)).collect();
    assert_eq!(r.ctl(attach_backing(1, &many)), resp::OK_NODATA);
    // Already attached.
    assert_eq!(
        r.ctl(attach_backing(1, &[entry(DATA_ADDR, 64)])),
        resp::ERR_UNSPEC
    );
}

#[test]
fn detach_backing_checks_and_transfer_needs_backing() {
    let mut r = rig();
    assert_eq!(r.ctl(detach_backing(3)), resp::ERR_INVALID_RESOURCE_ID);
    make_2d(&mut r, 1, 4, 4, &[entry(DATA_ADDR, 64)]);
    assert_eq!(r.ctl(detach_backing(1)), resp::OK_NODATA);
    assert_eq!(r.ctl(detach_backing(1)), resp::ERR_UNSPEC);
    assert_eq!(
        r.ctl(transfer_to_host_2d(1, rect(0, 0, 4, 4), 0)),
        resp::ERR_UNSPEC
    );
    assert_eq!(
        r.ctl(attach_backing(1, &[entry(DATA_ADDR, 64)])),
        resp::OK_NODATA
    );
    assert_eq!(
        r.ctl(transfer_to_host_2d(1, rect(0, 0, 4, 4), 0)),
        resp::OK_NODATA
    );
}

#[test]
fn transfer_rejects_rectangles_and_offsets_outside() {
    let mut r = rig();
    make_2d(&mut r, 1, 4, 4, &[entry(DATA_ADDR, 64)]);
    for (rc, off) in [
        (rect(0, 0, 5, 4), 0),
        (rect(3, 0, 2, 1), 0),
        (rect(0, 4, 1, 1), 0),
        (rect(u32::MAX, 0, 2, 1), 0),
        (rect(0, u32::MAX, 1, 2), 0),
        (rect(0, 0, u32::MAX, u32::MAX), 0),
        (rect(0, 0, 4, 4), 4),        // last row ends past the 64-byte backing
        (rect(0, 0, 1, 1), 61),       // one pixel straddling the end
        (rect(0, 0, 1, 1), u64::MAX), // overflowing offset
        (rect(1, 1, 2, 2), u64::MAX - 20),
    ] {
        assert_eq!(
            r.ctl(transfer_to_host_2d(1, rc, off)),
            resp::ERR_INVALID_PARAMETER,
            "{rc:?} at {off}"
        );
    }
    assert_eq!(
        r.ctl(transfer_to_host_2d(9, rect(0, 0, 1, 1), 0)),
        resp::ERR_INVALID_RESOURCE_ID
    );
    // An empty rectangle is a no-op.
    assert_eq!(
        r.ctl(transfer_to_host_2d(1, rect(0, 0, 0, 0), 0)),
        resp::OK_NODATA
    );
}

#[test]
fn set_scanout_checks_scanout_resource_and_rectangle() {
    let mut r = rig();
    make_2d(&mut r, 1, 4, 4, &[entry(DATA_ADDR, 64)]);
    assert_eq!(
        r.ctl(set_scanout(1, 1, rect(0, 0, 4, 4))),
        resp::ERR_INVALID_SCANOUT_ID
    );
    assert_eq!(
        r.ctl(set_scanout(u32::MAX, 1, rect(0, 0, 4, 4))),
        resp::ERR_INVALID_SCANOUT_ID
    );
    assert_eq!(
        r.ctl(set_scanout(0, 9, rect(0, 0, 4, 4))),
        resp::ERR_INVALID_RESOURCE_ID
    );
    for bad in [rect(0, 0, 5, 4), rect(0, 0, 0, 4), rect(u32::MAX, 0, 2, 2)] {
        assert_eq!(
            r.ctl(set_scanout(0, 1, bad)),
            resp::ERR_INVALID_PARAMETER,
            "{bad:?}"
        );
    }
    assert_eq!(r.ctl(set_scanout(0, 1, rect(0, 0, 4, 4))), resp::OK_NODATA);
    r.display.take();
    // Resource 0 disables the scanout.
    assert_eq!(r.ctl(set_scanout(0, 0, rect(0, 0, 0, 0))), resp::OK_NODATA);
    assert_eq!(
        r.display.take(),
        vec![DisplayEvent::Scanout { id: 0, frame: None }]
    );
    // Flushing a resource on no scanout succeeds and shows nothing.
    assert_eq!(r.ctl(flush(1, rect(0, 0, 4, 4))), resp::OK_NODATA);
    assert!(r.display.take().is_empty());
}

#[test]
fn flush_checks_resource_and_rectangle() {
    let mut r = rig();
    make_2d(&mut r, 1, 4, 4, &[entry(DATA_ADDR, 64)]);
    assert_eq!(
        r.ctl(flush(2, rect(0, 0, 1, 1))),
        resp::ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        r.ctl(flush(1, rect(0, 0, 5, 1))),
        resp::ERR_INVALID_PARAMETER
    );
    assert_eq!(
        r.ctl(flush(1, rect(u32::MAX, u32::MAX, 2, 2))),
        resp::ERR_INVALID_PARAMETER
    );
}

// ---- cursor queue ----

#[test]
fn cursor_commands_on_the_cursor_queue() {
    let mut r = rig();
    make_2d(&mut r, 7, 64, 64, &[entry(DATA_ADDR, 64 * 64 * 4)]);
    let pos = CursorPos {
        scanout_id: 0,
        x: 10,
        y: 20,
    };
    // The Linux driver sends cursor commands without a response buffer.
    let out = r.drv.submit(
        &mut r.dev,
        QueueKind::Cursor,
        &update_cursor(pos, 7, 3, 4),
        0,
    );
    assert!(out.is_empty());
    assert_eq!(r.dev.cursor().resource_id, 7);
    assert_eq!((r.dev.cursor().hot_x, r.dev.cursor().hot_y), (3, 4));
    let moved = CursorPos {
        scanout_id: 0,
        x: 100,
        y: 200,
    };
    r.drv
        .submit(&mut r.dev, QueueKind::Cursor, &move_cursor(moved), 0);
    assert_eq!((r.dev.cursor().x, r.dev.cursor().y), (100, 200));
    assert!(matches!(
        r.display.take().last(),
        Some(DisplayEvent::Cursor(c)) if c.x == 100 && c.resource_id == 7
    ));
    // With a response buffer the errors are visible.
    let bad_scanout = CursorPos {
        scanout_id: 5,
        ..pos
    };
    let out = r
        .drv
        .submit(&mut r.dev, QueueKind::Cursor, &move_cursor(bad_scanout), 24);
    assert_eq!(resp_type(&out), resp::ERR_INVALID_SCANOUT_ID);
    let out = r.drv.submit(
        &mut r.dev,
        QueueKind::Cursor,
        &update_cursor(pos, 99, 0, 0),
        24,
    );
    assert_eq!(resp_type(&out), resp::ERR_INVALID_RESOURCE_ID);
    assert_eq!(r.dev.cursor().resource_id, 7);
    // Hiding the cursor; unref of the cursor resource also hides it.
    r.drv.submit(
        &mut r.dev,
        QueueKind::Cursor,
        &update_cursor(pos, 0, 0, 0),
        0,
    );
    assert_eq!(r.dev.cursor().resource_id, 0);
}

// ---- blobs ----

const SCANOUT_W: u32 = 64;
const SCANOUT_H: u32 = 64; // 64*64*4 = 4 pages

fn blob_scanout(id: u32) -> ScanoutBlob {
    ScanoutBlob {
        rect: rect(0, 0, SCANOUT_W, SCANOUT_H),
        scanout_id: 0,
        resource_id: id,
        width: SCANOUT_W,
        height: SCANOUT_H,
        format: XRGB,
        strides: [SCANOUT_W * 4, 0, 0, 0],
        offsets: [0; 4],
    }
}

/// Writes the pattern for a 4-page blob across `pages` (entry order) through `write`.
fn paint(pages: &[u64], mut write: impl FnMut(u64, &[u8])) {
    let pat = pattern(SCANOUT_W * SCANOUT_H);
    for (i, addr) in pages.iter().enumerate() {
        write(*addr, &pat[i * P as usize..(i + 1) * P as usize]);
    }
}

fn show_blob(r: &mut Rig, id: u32) -> Vec<u8> {
    assert_eq!(r.ctl(set_scanout_blob(&blob_scanout(id))), resp::OK_NODATA);
    assert_eq!(
        r.ctl(flush(id, rect(0, 0, SCANOUT_W, SCANOUT_H))),
        resp::OK_NODATA
    );
    r.last_flush_rgba()
}

#[test]
fn ram_blob_is_exported_as_udmabuf_and_displayed_through_its_mapping() {
    let mut r = rig();
    let pages = [
        DATA_ADDR + 3 * P,
        DATA_ADDR,
        DATA_ADDR + 9 * P,
        DATA_ADDR + P,
    ];
    paint(&pages, |a, b| r.write(a, b));
    let entries: Vec<BlobEntry> = pages.iter().map(|a| entry(*a, P)).collect();
    assert_eq!(
        r.ctl(create_blob(1, 1, 3, 4 * P, &entries)),
        resp::OK_NODATA
    );
    assert_eq!(
        r.dev.blob_state(1),
        Some((BlobPath::Export(ExportKind::Udmabuf), true))
    );
    assert_eq!(r.ctl(set_scanout_blob(&blob_scanout(1))), resp::OK_NODATA);
    let evs = r.display.take();
    assert!(matches!(
        &evs[0],
        DisplayEvent::Scanout { frame: Some(f), .. } if f.dmabuf && f.width == SCANOUT_W && f.stride == SCANOUT_W * 4
    ));
    assert_eq!(
        r.ctl(flush(1, rect(0, 0, SCANOUT_W, SCANOUT_H))),
        resp::OK_NODATA
    );
    assert_eq!(r.last_flush_rgba(), expected_rgba(SCANOUT_W * SCANOUT_H));
    // Guest RAM is read through guest memory, never through the exporter.
    let mut st = r.exporter.state.lock().unwrap();
    assert_eq!(st.passthrough_reads, 0);
    assert_eq!(st.exports.len(), 1);
    assert_eq!(st.exports[0].1, entries);
    assert_eq!(st.live(), 1);
}

#[test]
fn bar_blob_with_out_of_order_ranges_is_one_vfio_export_in_entry_order() {
    let mut r = rig();
    let entries = bar_blob(&mut r, 4);
    let region = fake_region(2);
    assert_eq!(
        r.dev.blob_state(4),
        Some((BlobPath::Export(ExportKind::Vfio(region)), true))
    );
    assert_eq!(show_blob(&mut r, 4), expected_rgba(SCANOUT_W * SCANOUT_H));
    let st = r.exporter.state.lock().unwrap();
    assert_eq!(st.exports, vec![(ExportKind::Vfio(region), entries)]);
}

#[test]
fn blob_spanning_ram_and_bar_takes_the_cpu_path_and_still_displays() {
    let mut r = rig();
    let pages = [DATA_ADDR, BAR_BASE + P, DATA_ADDR + 2 * P, BAR_BASE];
    let ex = r.exporter.clone();
    let mem = r.drv.mem.clone();
    paint(&pages, |a, b| {
        if a >= BAR_BASE {
            ex.write_bar(a, b)
        } else {
            mem.write_slice(b, GuestAddress(a)).unwrap()
        }
    });
    let entries: Vec<BlobEntry> = pages.iter().map(|a| entry(*a, P)).collect();
    assert_eq!(
        r.ctl(create_blob(2, 1, 0, 4 * P, &entries)),
        resp::OK_NODATA
    );
    assert!(matches!(
        r.dev.blob_state(2),
        Some((BlobPath::Cpu(_), false))
    ));
    assert!(r.exporter.state.lock().unwrap().exports.is_empty());
    assert_eq!(r.ctl(set_scanout_blob(&blob_scanout(2))), resp::OK_NODATA);
    assert!(matches!(
        &r.display.take()[0],
        DisplayEvent::Scanout { frame: Some(f), .. } if !f.dmabuf
    ));
    assert_eq!(show_blob(&mut r, 2), expected_rgba(SCANOUT_W * SCANOUT_H));
}

#[test]
fn blob_spanning_two_bars_takes_the_cpu_path() {
    let mut r = rig();
    let pages = [BAR_BASE, BAR2_BASE, BAR_BASE + P, BAR2_BASE + P];
    let ex = r.exporter.clone();
    paint(&pages, |a, b| ex.write_bar(a, b));
    let entries: Vec<BlobEntry> = pages.iter().map(|a| entry(*a, P)).collect();
    assert_eq!(
        r.ctl(create_blob(3, 1, 0, 4 * P, &entries)),
        resp::OK_NODATA
    );
    assert!(
        matches!(r.dev.blob_state(3), Some((BlobPath::Cpu(why), false)) if why.contains("two regions"))
    );
    assert_eq!(show_blob(&mut r, 3), expected_rgba(SCANOUT_W * SCANOUT_H));
}

#[test]
fn unsupported_udmabuf_falls_back_to_the_cpu_path() {
    let mut r = rig();
    r.exporter.state.lock().unwrap().udmabuf = false;
    let pages = [
        DATA_ADDR,
        DATA_ADDR + P,
        DATA_ADDR + 2 * P,
        DATA_ADDR + 3 * P,
    ];
    paint(&pages, |a, b| r.write(a, b));
    let entries: Vec<BlobEntry> = pages.iter().map(|a| entry(*a, P)).collect();
    for id in [1, 2] {
        assert_eq!(
            r.ctl(create_blob(id, 1, 0, 4 * P, &entries)),
            resp::OK_NODATA
        );
        assert!(matches!(
            r.dev.blob_state(id),
            Some((BlobPath::Cpu(_), false))
        ));
    }
    assert_eq!(show_blob(&mut r, 2), expected_rgba(SCANOUT_W * SCANOUT_H));
}

#[test]
fn export_faults_guest_is_an_error_host_is_the_cpu_path() {
    let mut r = rig();
    // Unaligned entries: the (fake) kernel says EINVAL, a guest fault.
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, 100, &[entry(DATA_ADDR + 8, 100)])),
        resp::ERR_INVALID_PARAMETER
    );
    assert_eq!(r.dev.resource_count(), 0);
    r.exporter.state.lock().unwrap().fail_next = Some(DmaBufError::Kernel {
        op: KernelOp::VfioDmaBufExport,
        errno: Errno(libc::ENODEV),
    });
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, P, &[entry(BAR_BASE, P)])),
        resp::ERR_INVALID_PARAMETER
    );
    r.exporter.state.lock().unwrap().fail_next = Some(DmaBufError::Kernel {
        op: KernelOp::VfioDmaBufExport,
        errno: Errno(libc::EMFILE),
    });
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, P, &[entry(BAR_BASE, P)])),
        resp::OK_NODATA
    );
    assert!(matches!(
        r.dev.blob_state(1),
        Some((BlobPath::Cpu(why), false)) if why.contains("Too many open files")
    ));
}

#[test]
fn blob_dmabuf_is_recreated_on_reattach_and_released_on_unref() {
    let mut r = rig();
    let a = [entry(DATA_ADDR, 4 * P)];
    let b = [
        entry(DATA_ADDR + 8 * P, 2 * P),
        entry(DATA_ADDR + 4 * P, 2 * P),
    ];
    assert_eq!(r.ctl(create_blob(1, 1, 0, 4 * P, &a)), resp::OK_NODATA);
    assert_eq!(r.ctl(set_scanout_blob(&blob_scanout(1))), resp::OK_NODATA);
    assert_eq!(r.exporter.state.lock().unwrap().live(), 1);
    assert_eq!(r.ctl(detach_backing(1)), resp::OK_NODATA);
    assert_eq!(r.exporter.state.lock().unwrap().live(), 0);
    assert_eq!(r.dev.blob_state(1).map(|s| s.1), Some(false));
    // Detached: no flush, no second detach, no scanout.
    assert_eq!(
        r.ctl(flush(1, rect(0, 0, SCANOUT_W, SCANOUT_H))),
        resp::ERR_UNSPEC
    );
    assert_eq!(r.ctl(detach_backing(1)), resp::ERR_UNSPEC);
    assert_eq!(r.ctl(set_scanout_blob(&blob_scanout(1))), resp::ERR_UNSPEC);
    // Re-attach with too little memory, then properly: a new export of the new entries.
    assert_eq!(
        r.ctl(attach_backing(1, &[entry(DATA_ADDR, P)])),
        resp::ERR_INVALID_PARAMETER
    );
    r.display.take();
    assert_eq!(r.ctl(attach_backing(1, &b)), resp::OK_NODATA);
    assert_eq!(r.ctl(attach_backing(1, &b)), resp::ERR_UNSPEC);
    {
        let mut st = r.exporter.state.lock().unwrap();
        assert_eq!(st.exports.len(), 2);
        assert_eq!(st.exports[1].1, b.to_vec());
        assert_eq!(st.live(), 1);
    }
    // The scanout still on this blob was handed the new dma-buf.
    assert!(matches!(
        &r.display.take()[..],
        [DisplayEvent::Scanout { frame: Some(f), .. }] if f.dmabuf
    ));
    paint(
        &[
            DATA_ADDR + 8 * P,
            DATA_ADDR + 9 * P,
            DATA_ADDR + 4 * P,
            DATA_ADDR + 5 * P,
        ],
        |a, bytes| r.write(a, bytes),
    );
    assert_eq!(show_blob(&mut r, 1), expected_rgba(SCANOUT_W * SCANOUT_H));
    assert_eq!(r.ctl(unref(1)), resp::OK_NODATA);
    assert_eq!(r.exporter.state.lock().unwrap().live(), 0);
}

#[test]
fn create_blob_rejects_hostile_fields() {
    let mut r = rig();
    let ok = [entry(DATA_ADDR, P)];
    assert_eq!(
        r.ctl(create_blob(0, 1, 0, P, &ok)),
        resp::ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        r.ctl(create_blob(1, 2, 0, P, &ok)),
        resp::ERR_INVALID_PARAMETER
    ); // HOST3D
    assert_eq!(
        r.ctl(create_blob(1, 0, 0, P, &ok)),
        resp::ERR_INVALID_PARAMETER
    );
    assert_eq!(
        r.ctl(create_blob(1, 1, 8, P, &ok)),
        resp::ERR_INVALID_PARAMETER
    ); // flags
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, 0, &ok)),
        resp::ERR_INVALID_PARAMETER
    ); // size 0
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, P, &[])),
        resp::ERR_INVALID_PARAMETER
    );
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, P + 1, &ok)),
        resp::ERR_INVALID_PARAMETER
    ); // size beyond entries
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, u64::MAX, &ok)),
        resp::ERR_INVALID_PARAMETER
    );
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, P, &[entry(0x5_0000_0000, P)])),
        resp::ERR_UNSPEC
    ); // not in RAM nor a BAR
    assert_eq!(
        r.ctl(create_blob(
            1,
            1,
            0,
            P,
            &[entry(BAR_BASE + BAR_SIZE - 8, 16)]
        )),
        resp::ERR_UNSPEC
    ); // crosses the BAR's end
    let mut with_id = create_blob(1, 1, 0, P, &ok);
    with_id[40..48].copy_from_slice(&5u64.to_le_bytes());
    assert_eq!(r.ctl(with_id), resp::ERR_INVALID_PARAMETER); // blob_id
    let mut many = create_blob(1, 1, 0, P, &ok);
    many[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(r.ctl(many), resp::ERR_INVALID_PARAMETER);
    assert_eq!(r.dev.resource_count(), 0);
    assert_eq!(r.ctl(create_blob(1, 1, 0, P, &ok)), resp::OK_NODATA);
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, P, &ok)),
        resp::ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        r.ctl(create_2d(1, XRGB, 1, 1)),
        resp::ERR_INVALID_RESOURCE_ID
    );
}

#[test]
fn set_scanout_blob_checks_format_stride_offset_against_the_blob() {
    let mut r = rig();
    let entries = [entry(DATA_ADDR, 4 * P)];
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, 4 * P, &entries)),
        resp::OK_NODATA
    );
    make_2d(&mut r, 2, 4, 4, &[entry(DATA_ADDR, 64)]);
    let good = blob_scanout(1);
    let cases: Vec<(ScanoutBlob, u32)> = vec![
        (
            ScanoutBlob {
                scanout_id: 1,
                ..good
            },
            resp::ERR_INVALID_SCANOUT_ID,
        ),
        (
            ScanoutBlob {
                resource_id: 9,
                ..good
            },
            resp::ERR_INVALID_RESOURCE_ID,
        ),
        (
            ScanoutBlob {
                resource_id: 2,
                ..good
            },
            resp::ERR_INVALID_RESOURCE_ID,
        ),
        (
            ScanoutBlob { format: 0, ..good },
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            ScanoutBlob {
                format: 0xdead,
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            ScanoutBlob { width: 0, ..good },
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            ScanoutBlob { height: 0, ..good },
            resp::ERR_INVALID_PARAMETER,
        ),
        // Stride below a row.
        (
            ScanoutBlob {
                strides: [SCANOUT_W * 4 - 1, 0, 0, 0],
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        // One row more than the blob holds.
        (
            ScanoutBlob {
                height: SCANOUT_H + 1,
                rect: rect(0, 0, SCANOUT_W, SCANOUT_H + 1),
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        // Offset pushes the last row out.
        (
            ScanoutBlob {
                offsets: [4, 0, 0, 0],
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            ScanoutBlob {
                offsets: [u32::MAX, 0, 0, 0],
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            ScanoutBlob {
                strides: [u32::MAX, 0, 0, 0],
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            ScanoutBlob {
                width: u32::MAX,
                height: u32::MAX,
                strides: [u32::MAX, 0, 0, 0],
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        // Rectangle outside the framebuffer.
        (
            ScanoutBlob {
                rect: rect(1, 0, SCANOUT_W, SCANOUT_H),
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            ScanoutBlob {
                rect: rect(u32::MAX, 0, 2, 2),
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            ScanoutBlob {
                rect: rect(0, 0, 0, 0),
                ..good
            },
            resp::ERR_INVALID_PARAMETER,
        ),
    ];
    for (b, want) in cases {
        assert_eq!(r.ctl(set_scanout_blob(&b)), want, "{b:?}");
    }
    // A wider stride with a smaller framebuffer that still fits is fine.
    let narrow = ScanoutBlob {
        width: 16,
        height: 16,
        rect: rect(4, 4, 8, 8),
        ..good
    };
    assert_eq!(r.ctl(set_scanout_blob(&narrow)), resp::OK_NODATA);
    match r.display.take().last() {
        Some(DisplayEvent::Scanout { frame: Some(f), .. }) => {
            assert_eq!((f.width, f.height, f.stride), (8, 8, SCANOUT_W * 4));
            assert_eq!(f.offset, 4 * u64::from(SCANOUT_W * 4) + 16);
        }
        e => panic!("{e:?}"),
    }
    // Flush rectangles are checked against the framebuffer shown.
    assert_eq!(
        r.ctl(flush(1, rect(0, 0, 9, 8))),
        resp::ERR_INVALID_PARAMETER
    );
    assert_eq!(r.ctl(flush(1, rect(0, 0, 8, 8))), resp::OK_NODATA);
    // Resource 0 disables.
    assert_eq!(
        r.ctl(set_scanout_blob(&ScanoutBlob {
            resource_id: 0,
            ..good
        })),
        resp::OK_NODATA
    );
    // A blob cannot go through plain SET_SCANOUT.
    assert_eq!(
        r.ctl(set_scanout(0, 1, rect(0, 0, 1, 1))),
        resp::ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        r.ctl(transfer_to_host_2d(1, rect(0, 0, 1, 1), 0)),
        resp::ERR_INVALID_RESOURCE_ID
    );
}

#[test]
fn reset_drops_resources_and_releases_dmabufs() {
    let mut r = rig();
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, P, &[entry(DATA_ADDR, P)])),
        resp::OK_NODATA
    );
    make_2d(&mut r, 2, 4, 4, &[entry(DATA_ADDR, 64)]);
    r.dev.reset();
    assert_eq!(r.dev.resource_count(), 0);
    assert_eq!(r.dev.hostmem_used(), 0);
    assert_eq!(r.exporter.state.lock().unwrap().live(), 0);
}

/// Random requests (valid command types with random bodies and random lengths) always get a
/// response of a known type and never panic.
#[test]
fn random_requests_always_get_a_known_response() {
    let mut r = rig();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let types = [
        cmd::GET_DISPLAY_INFO,
        cmd::GET_EDID,
        cmd::RESOURCE_CREATE_2D,
        cmd::RESOURCE_UNREF,
        cmd::RESOURCE_ATTACH_BACKING,
        cmd::RESOURCE_DETACH_BACKING,
        cmd::TRANSFER_TO_HOST_2D,
        cmd::SET_SCANOUT,
        cmd::RESOURCE_FLUSH,
        cmd::RESOURCE_CREATE_BLOB,
        cmd::SET_SCANOUT_BLOB,
        cmd::UPDATE_CURSOR,
        cmd::MOVE_CURSOR,
    ];
    let known = [
        resp::OK_NODATA,
        resp::OK_DISPLAY_INFO,
        resp::OK_EDID,
        resp::ERR_UNSPEC,
        resp::ERR_OUT_OF_MEMORY,
        resp::ERR_INVALID_SCANOUT_ID,
        resp::ERR_INVALID_RESOURCE_ID,
        resp::ERR_INVALID_CONTEXT_ID,
        resp::ERR_INVALID_PARAMETER,
    ];
    for _ in 0..3000 {
        let t = types[(next() % types.len() as u64) as usize];
        let len = 24 + (next() % 120) as usize;
        let mut req: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        req[0..4].copy_from_slice(&t.to_le_bytes());
        // Small ids and counts half of the time, so that resources actually exist.
        if next() % 2 == 0 && len >= 40 {
            req[24..28].copy_from_slice(&((next() % 4) as u32).to_le_bytes());
            req[28..32].copy_from_slice(&((next() % 4) as u32).to_le_bytes());
        }
        let rt = r.ctl(req);
        assert!(known.contains(&rt), "unknown response {rt:#x}");
    }
}

#[test]
fn export_covers_exactly_the_blob_size() {
    let mut r = rig();
    let entries = [
        entry(DATA_ADDR, 2 * P),
        entry(DATA_ADDR + 4 * P, 2 * P),
        entry(DATA_ADDR + 8 * P, P),
    ];
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, 3 * P, &entries)),
        resp::OK_NODATA
    );
    let st = r.exporter.state.lock().unwrap();
    assert_eq!(
        st.exports[0].1,
        vec![entry(DATA_ADDR, 2 * P), entry(DATA_ADDR + 4 * P, P)]
    );
}

// ---- hostile guests: revocation, budgets, host memory, log volume ----

/// Creates blob `id` of four out-of-order BAR pages holding the pattern; returns its entries.
fn bar_blob(r: &mut Rig, id: u32) -> Vec<BlobEntry> {
    let pages = [
        BAR_BASE + 8 * P,
        BAR_BASE + 2 * P,
        BAR_BASE + 5 * P,
        BAR_BASE,
    ];
    let ex = r.exporter.clone();
    paint(&pages, |a, b| ex.write_bar(a, b));
    let entries: Vec<BlobEntry> = pages.iter().map(|a| entry(*a, P)).collect();
    assert_eq!(
        r.ctl(create_blob(id, 1, 2, 4 * P, &entries)),
        resp::OK_NODATA
    );
    entries
}

#[test]
fn bar_pixels_are_read_through_the_exporter_never_a_mapping() {
    let mut r = rig();
    let _ = bar_blob(&mut r, 4);
    assert_eq!(show_blob(&mut r, 4), expected_rgba(SCANOUT_W * SCANOUT_H));
    assert!(r.exporter.state.lock().unwrap().passthrough_reads > 0);
}

#[test]
fn memory_decode_off_drops_the_dmabuf_keeps_serving_and_reexports_when_back() {
    let mut r = rig();
    let _ = bar_blob(&mut r, 4);
    assert_eq!(show_blob(&mut r, 4), expected_rgba(SCANOUT_W * SCANOUT_H));
    assert_eq!(r.exporter.state.lock().unwrap().live(), 1);

    // The guest turns the device's memory decoding off: the kernel revokes the dma-buf.
    r.exporter.state.lock().unwrap().decoding = false;
    for _ in 0..3 {
        assert_eq!(
            r.ctl(flush(4, rect(0, 0, SCANOUT_W, SCANOUT_H))),
            resp::OK_NODATA
        );
    }
    // No frame reached the display (reads fail cleanly): it keeps the last one.
    assert!(!r
        .display
        .take()
        .iter()
        .any(|e| matches!(e, DisplayEvent::Flush { .. })));
    {
        let mut st = r.exporter.state.lock().unwrap();
        assert_eq!(st.live(), 0, "the stale dma-buf is released");
        assert_eq!(st.exports.len(), 1, "no export while decoding is off");
    }
    assert_eq!(
        r.dev.blob_state(4),
        Some((BlobPath::Export(ExportKind::Vfio(fake_region(2))), false))
    );

    // Decoding back on (a new generation of the region): the next flush exports again.
    {
        let mut st = r.exporter.state.lock().unwrap();
        st.decoding = true;
        st.generation += 1;
    }
    assert_eq!(
        r.ctl(flush(4, rect(0, 0, SCANOUT_W, SCANOUT_H))),
        resp::OK_NODATA
    );
    assert_eq!(r.last_flush_rgba(), expected_rgba(SCANOUT_W * SCANOUT_H));
    let mut st = r.exporter.state.lock().unwrap();
    assert_eq!((st.live(), st.exports.len()), (1, 2));
}

#[test]
fn a_moved_bar_makes_the_dmabuf_stale_and_it_is_exported_again() {
    let mut r = rig();
    let _ = bar_blob(&mut r, 4);
    assert_eq!(show_blob(&mut r, 4), expected_rgba(SCANOUT_W * SCANOUT_H));
    r.exporter.state.lock().unwrap().generation += 1;
    assert_eq!(show_blob(&mut r, 4), expected_rgba(SCANOUT_W * SCANOUT_H));
    let mut st = r.exporter.state.lock().unwrap();
    assert_eq!((st.live(), st.exports.len()), (1, 2));
}

#[test]
fn exported_dmabufs_are_bounded_and_freed_by_unref() {
    let mut r = rig_with(GpuConfig {
        max_dmabufs: 3,
        ..GpuConfig::default()
    });
    for id in 1..=3 {
        let e = [entry(DATA_ADDR + u64::from(id) * P, P)];
        assert_eq!(r.ctl(create_blob(id, 1, 0, P, &e)), resp::OK_NODATA);
    }
    let e = [entry(DATA_ADDR + 8 * P, P)];
    assert_eq!(r.ctl(create_blob(9, 1, 0, P, &e)), resp::ERR_OUT_OF_MEMORY);
    assert_eq!(r.dev.dmabuf_usage(), (3, 3));
    assert_eq!(r.exporter.state.lock().unwrap().live(), 3);
    assert_eq!(r.ctl(unref(2)), resp::OK_NODATA);
    assert_eq!(r.ctl(create_blob(9, 1, 0, P, &e)), resp::OK_NODATA);
    assert_eq!(r.exporter.state.lock().unwrap().live(), 3);
}

#[test]
fn dmabuf_ranges_are_bounded_per_export_and_in_total() {
    let mut r = rig_with(GpuConfig {
        max_dmabuf_ranges: 4,
        max_total_dmabuf_ranges: 6,
        ..GpuConfig::default()
    });
    // Five separate pages: five ranges, over the per-export limit.
    let five: Vec<BlobEntry> = (0..5).map(|i| entry(DATA_ADDR + 2 * i * P, P)).collect();
    assert_eq!(
        r.ctl(create_blob(1, 1, 0, 5 * P, &five)),
        resp::ERR_OUT_OF_MEMORY
    );
    // Five adjacent pages merge into one range.
    let merged: Vec<BlobEntry> = (0..5).map(|i| entry(DATA_ADDR + i * P, P)).collect();
    assert_eq!(r.ctl(create_blob(1, 1, 0, 5 * P, &merged)), resp::OK_NODATA);
    let four: Vec<BlobEntry> = (0..4).map(|i| entry(DATA_ADDR + 2 * i * P, P)).collect();
    assert_eq!(r.ctl(create_blob(2, 1, 0, 4 * P, &four)), resp::OK_NODATA);
    assert_eq!(r.dev.dmabuf_usage(), (2, 5));
    // 5 + 2 > 6 in total.
    let two = [entry(DATA_ADDR, P), entry(DATA_ADDR + 2 * P, P)];
    assert_eq!(
        r.ctl(create_blob(3, 1, 0, 2 * P, &two)),
        resp::ERR_OUT_OF_MEMORY
    );
    assert_eq!(r.ctl(detach_backing(2)), resp::OK_NODATA);
    assert_eq!(r.ctl(create_blob(3, 1, 0, 2 * P, &two)), resp::OK_NODATA);
    assert_eq!(r.dev.dmabuf_usage(), (2, 3));
}

#[test]
fn backing_entry_tables_count_against_max_hostmem() {
    let n = 4096usize;
    let table = crate::backing::Backing::host_bytes_for(n);
    let mut r = rig_with(GpuConfig {
        max_hostmem: 2 * table + table / 2,
        ..GpuConfig::default()
    });
    // n one-page entries over the same 16 pages (repeats are allowed).
    let entries: Vec<BlobEntry> = (0..n as u64)
        .map(|i| entry(DATA_ADDR + (i % 16) * P, P))
        .collect();
    r.exporter.state.lock().unwrap().udmabuf = false;
    assert_eq!(r.ctl(create_blob(1, 1, 0, P, &entries)), resp::OK_NODATA);
    assert_eq!(r.ctl(create_blob(2, 1, 0, P, &entries)), resp::OK_NODATA);
    assert_eq!(r.dev.hostmem_used(), 2 * table);
    assert_eq!(
        r.ctl(create_blob(3, 1, 0, P, &entries)),
        resp::ERR_OUT_OF_MEMORY
    );
    assert_eq!(r.ctl(detach_backing(1)), resp::OK_NODATA);
    assert_eq!(r.dev.hostmem_used(), table);
    assert_eq!(r.ctl(attach_backing(1, &entries)), resp::OK_NODATA);
    assert_eq!(r.ctl(unref(1)), resp::OK_NODATA);
    assert_eq!(r.ctl(unref(2)), resp::OK_NODATA);
    assert_eq!(r.dev.hostmem_used(), 0);
    // 2D backings count too.
    assert_eq!(r.ctl(create_2d(5, XRGB, 4, 4)), resp::OK_NODATA);
    let used = r.dev.hostmem_used();
    assert_eq!(r.ctl(attach_backing(5, &entries[..16])), resp::OK_NODATA);
    assert_eq!(
        r.dev.hostmem_used(),
        used + crate::backing::Backing::host_bytes_for(16)
    );
}

/// Counts log records whose message contains a marker.
struct CountingLogger;

static MARKED_LINES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const MARKER_ID: u32 = 0x7777_7777;

impl log::Log for CountingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.args().to_string().contains(&MARKER_ID.to_string()) {
            MARKED_LINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

#[test]
fn ten_thousand_bad_commands_log_a_handful_of_lines() {
    log::set_logger(&CountingLogger).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Trace);
    let mut r = rig();
    for _ in 0..10_000 {
        assert_eq!(r.ctl(unref(MARKER_ID)), resp::ERR_INVALID_RESOURCE_ID);
    }
    // At most the first line and a summary of the suppressed ones (none at all if another
    // test's guest error used this interval's line of the same call site).
    let lines = MARKED_LINES.load(std::sync::atomic::Ordering::Relaxed);
    assert!(lines <= 2, "{lines} lines logged");
}
