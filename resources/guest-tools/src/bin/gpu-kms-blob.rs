//! gpu-kms-blob: shows a guest-RAM blob with KMS through the stock `virtio-gpu` kernel driver
//! (L2 program of the rig scenario gpu-ram-blob).
//!
//! With the `virtio-gpu` module loaded (see resources/rig/l2/kms-blob.sh), the program opens the
//! DRM card whose driver is `virtio_gpu` and:
//! 1. checks blob support (DRM_IOCTL_VIRTGPU_GETPARAM, VIRTGPU_PARAM_RESOURCE_BLOB);
//! 2. finds a connected connector, its first mode (or `--mode WxH`) and a CRTC;
//! 3. creates a blob of mode width * height * 4 bytes (page-rounded) with
//!    DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB (blob_mem GUEST, flags USE_MAPPABLE | USE_SHAREABLE),
//!    maps it (DRM_IOCTL_VIRTGPU_MAP + mmap) and paints pattern `VARIANT_KMS` of
//!    `guest_tools::pattern::pixel_xrgb8888` (XRGB8888, stride width * 4);
//! 4. DRM_IOCTL_MODE_ADDFB2 on the blob's GEM handle, DRM_IOCTL_MODE_SETCRTC with the mode,
//!    DRM_IOCTL_MODE_DIRTYFB with the whole-screen rectangle (the driver then sends
//!    SET_SCANOUT_BLOB and RESOURCE_FLUSH to the device);
//! 5. with `--flushes N` (default 0), right after that first DIRTYFB, N more whole-screen
//!    DIRTYFB ioctls one after another (the pattern is not changed), timed;
//! 6. keeps the framebuffer up for `--hold-ms` - or, with `--hold-until PATH`, until PATH exists
//!    (polled every 50 ms) but at most `--hold-ms` - then reads the kernel messages logged
//!    meanwhile (/dev/kmsg) for the driver's "response 0x12xx (command 0x...)" device-error lines.
//!
//! `--expect ok` (default) passes iff every ioctl succeeds and the device reported no error;
//! `--expect scanout-error` passes iff every ioctl succeeds and the device answered SET_SCANOUT_BLOB
//! (0x10d) with an error - Debian's QEMU 7.2 without a working udmabuf.
//! Output: `RIG-DATA scenario=gpu-kms-blob ...` lines, a final `RIG-RESULT`; exit 0 iff PASS.
//! Only with the options, and after the line with `shown=`:
//! - `--flushes N` (N > 0): `RIG-DATA ... flushes=<N> flushes_ms=<total ms> flush_max_ms=<slowest
//!   one, ms with 3 decimals> flush_max_index=<which, from 0> flush_median_ms=<median>`, and `flushes=<N> flushes_ms=<total ms>` in the `RIG-RESULT` line;
//! - `--hold-until PATH`: `RIG-DATA ... held_ms=<n> hold_end=path|time` after the hold (`path`:
//!   PATH appeared, `time`: `--hold-ms` ran out).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use guest_tools::drm::{
    find_virtio_gpu_card, mode_name, Card, ClipRect, VIRTGPU_BLOB_FLAG_USE_MAPPABLE,
    VIRTGPU_BLOB_FLAG_USE_SHAREABLE, VIRTGPU_BLOB_MEM_GUEST, VIRTGPU_PARAM_RESOURCE_BLOB,
};
use guest_tools::error::{Error, Result};
use guest_tools::hold::{hold_until, HOLD_POLL};
use guest_tools::kmsg::KernelLog;
use guest_tools::pagemap::PAGE_SIZE;
use guest_tools::pattern::{fill_image, VARIANT_KMS};
use guest_tools::report::Reporter;

/// What the device is expected to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Expect {
    /// No device error (our VMM).
    Ok,
    /// SET_SCANOUT_BLOB answered with an error (QEMU 7.2 without udmabuf).
    ScanoutError,
}

#[derive(Parser, Debug)]
#[command(about = "Show a guest-RAM virtio-gpu blob with KMS (rig scenario gpu-ram-blob)")]
struct Args {
    /// DRM card node; default: the first /dev/dri/cardN whose driver is virtio_gpu.
    #[arg(long)]
    card: Option<PathBuf>,
    /// Mode to use (WxH); default: the connector's first mode.
    #[arg(long)]
    mode: Option<String>,
    /// How long to wait for the card node to appear (ms).
    #[arg(long, default_value_t = 5000)]
    wait_card_ms: u64,
    /// How long to keep the framebuffer shown before exiting (ms); with `--hold-until`, the
    /// longest wait for its path.
    #[arg(long, default_value_t = 1500)]
    hold_ms: u64,
    /// End the hold as soon as this path exists (polled every 50 ms, at most `--hold-ms`).
    #[arg(long)]
    hold_until: Option<PathBuf>,
    /// Whole-screen DIRTYFB ioctls to issue (and time) right after the first one.
    #[arg(long, default_value_t = 0)]
    flushes: u32,
    /// Expected device answers.
    #[arg(long, value_enum, default_value_t = Expect::Ok)]
    expect: Expect,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "gpu-kms-blob")]
    scenario: String,
}

fn find_card(args: &Args) -> Result<(PathBuf, Card)> {
    if let Some(p) = &args.card {
        return Ok((p.clone(), Card::open(p)?));
    }
    find_virtio_gpu_card(Duration::from_millis(args.wait_card_ms))
}

/// A MAP_SHARED mapping of a GEM object through the card fd.
struct GemMap {
    ptr: *mut u8,
    len: usize,
}

impl GemMap {
    fn new(card: &Card, offset: u64, len: usize) -> Result<Self> {
        // SAFETY: a new mapping chosen by the kernel of the card fd at the GEM fake offset.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                card.fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os(format!(
                "mmap blob ({len} bytes at offset {offset:#x})"
            )));
        }
        Ok(GemMap {
            ptr: ptr.cast(),
            len,
        })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr/len are our live read-write mapping, borrowed mutably through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for GemMap {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Times of a run of flushes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FlushTimes {
    total: Duration,
    max: Duration,
    /// Which flush (0-based) took `max`.
    max_index: u32,
    /// The median flush.
    median: Duration,
}

/// Calls `flush` `n` times one after another, timing each call; stops at the first error.
fn timed_flushes(n: u32, mut flush: impl FnMut() -> Result<()>) -> Result<FlushTimes> {
    let mut t = FlushTimes::default();
    let mut all = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t0 = Instant::now();
        flush()?;
        let d = t0.elapsed();
        t.total += d;
        if d > t.max {
            t.max = d;
            t.max_index = i;
        }
        all.push(d);
    }
    all.sort_unstable();
    t.median = all.get(all.len() / 2).copied().unwrap_or_default();
    Ok(t)
}

/// Milliseconds with 3 decimals.
fn ms3(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Parses the driver's "response 0xRESP (command 0xCMD)" device-error line.
fn parse_device_error(line: &str) -> Option<(u32, u32)> {
    let r = line.split("response 0x").nth(1)?;
    let resp = u32::from_str_radix(r.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok()?;
    let c = line.split("(command 0x").nth(1)?;
    let cmd = u32::from_str_radix(c.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok()?;
    Some((resp, cmd))
}

/// `--mode WxH` as (width, height).
fn parse_mode(w: &str) -> Result<(u16, u16)> {
    let (ws, hs) = w
        .split_once('x')
        .ok_or_else(|| Error::parse("--mode", format!("{w:?} is not WxH")))?;
    Ok((
        ws.parse()
            .map_err(|_| Error::parse("--mode", w.to_string()))?,
        hs.parse()
            .map_err(|_| Error::parse("--mode", w.to_string()))?,
    ))
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let mut kmsg = KernelLog::open_at_end()?;

    let (path, card) = find_card(args)?;
    let blob = card.virtgpu_getparam(VIRTGPU_PARAM_RESOURCE_BLOB)?;
    rep.data(&[
        ("card", path.display().to_string()),
        ("driver", card.driver_name()?),
        ("param_resource_blob", blob.to_string()),
    ]);
    if blob != 1 {
        return Err(Error::Unsupported(
            "the device/driver has no blob resources (VIRTGPU_PARAM_RESOURCE_BLOB = 0)".into(),
        ));
    }
    let want = args.mode.as_deref().map(parse_mode).transpose()?;
    let output = card.first_output(want)?;
    let (mode, crtc) = (output.mode, output.crtc);
    let (w, h) = (u32::from(mode.hdisplay), u32::from(mode.vdisplay));
    rep.data(&[
        ("connector", output.connector.to_string()),
        ("crtc", crtc.to_string()),
        ("mode", mode_name(&mode)),
        ("width", w.to_string()),
        ("height", h.to_string()),
        ("modes", output.modes.to_string()),
    ]);

    let pitch = w * 4;
    let image = u64::from(pitch) * u64::from(h);
    let size = image.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64;
    let (bo, res) = card.virtgpu_create_blob(
        VIRTGPU_BLOB_MEM_GUEST,
        VIRTGPU_BLOB_FLAG_USE_MAPPABLE | VIRTGPU_BLOB_FLAG_USE_SHAREABLE,
        size,
    )?;
    let offset = card.virtgpu_map(bo)?;
    let mut map = GemMap::new(&card, offset, size as usize)?;
    let t0 = Instant::now();
    fill_image(&mut map.bytes()[..image as usize], VARIANT_KMS, w);
    let paint_ms = t0.elapsed().as_millis();
    rep.data(&[
        ("blob_size", size.to_string()),
        ("resource_id", res.to_string()),
        ("bo_handle", bo.to_string()),
        ("map_offset", format!("{offset:#x}")),
        ("variant", VARIANT_KMS.to_string()),
        ("paint_ms", paint_ms.to_string()),
    ]);
    let fb = card.add_fb2(w, h, bo, pitch)?;
    card.set_crtc(crtc, fb, output.connector, &mode)?;
    let clip = ClipRect {
        x1: 0,
        y1: 0,
        x2: mode.hdisplay,
        y2: mode.vdisplay,
    };
    card.dirty_fb(fb, &[clip])?;
    rep.data(&[
        ("fb", fb.to_string()),
        ("setcrtc", "ok".into()),
        ("dirtyfb", format!("0,0,{w},{h}")),
        ("shown", res.to_string()),
        ("hold_ms", args.hold_ms.to_string()),
    ]);
    let flush_times = timed_flushes(args.flushes, || card.dirty_fb(fb, &[clip]))?;
    if args.flushes > 0 {
        rep.data(&[
            ("flushes", args.flushes.to_string()),
            ("flushes_ms", flush_times.total.as_millis().to_string()),
            ("flush_max_ms", ms3(flush_times.max)),
            ("flush_max_index", flush_times.max_index.to_string()),
            ("flush_median_ms", ms3(flush_times.median)),
        ]);
    }
    let hold = Duration::from_millis(args.hold_ms);
    match &args.hold_until {
        None => std::thread::sleep(hold),
        Some(p) => {
            let (held, end) = hold_until(p, hold, HOLD_POLL);
            rep.data(&[
                ("held_ms", held.as_millis().to_string()),
                ("hold_end", end.word().into()),
            ]);
        }
    }

    let klog = kmsg.new_records();
    for l in klog
        .iter()
        .filter(|l| l.contains("drm") || l.contains("virtio"))
    {
        rep.log(&format!("kernel: {l}"));
    }
    let errors: Vec<(u32, u32)> = klog.iter().filter_map(|l| parse_device_error(l)).collect();
    for (r, c) in &errors {
        rep.data(&[
            ("device_error", format!("{r:#06x}")),
            ("command", format!("{c:#06x}")),
        ]);
    }
    let scanout_error = errors.iter().any(|&(_, c)| c == 0x10d);
    let pass = match args.expect {
        Expect::Ok => errors.is_empty(),
        Expect::ScanoutError => scanout_error,
    };
    let mut fields = vec![
        (
            "expect",
            args.expect
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
        ),
        ("blob_size", size.to_string()),
        ("resource_id", res.to_string()),
        ("width", w.to_string()),
        ("height", h.to_string()),
        ("fb", fb.to_string()),
        ("device_errors", errors.len().to_string()),
    ];
    if args.flushes > 0 {
        fields.push(("flushes", args.flushes.to_string()));
        fields.push(("flushes_ms", flush_times.total.as_millis().to_string()));
    }
    rep.result(pass, &fields);
    Ok(pass)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new(&args.scenario);
    rep.finish(run(&args, &rep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_error_lines_of_the_driver_parse() {
        let l = "[drm:virtio_gpu_dequeue_ctrl_func [virtio_gpu]] *ERROR* response 0x1200 (command 0x10d)";
        assert_eq!(parse_device_error(l), Some((0x1200, 0x10d)));
        assert_eq!(parse_device_error("virtio_gpu: something else"), None);
    }

    #[test]
    fn modes_parse_as_width_x_height() {
        assert_eq!(parse_mode("1024x768").unwrap(), (1024, 768));
        assert!(parse_mode("640").is_err());
        assert!(parse_mode("axb").is_err());
        assert!(parse_mode("70000x10").is_err());
    }

    #[test]
    fn options_default_to_the_plain_hold() {
        let a = Args::try_parse_from(["gpu-kms-blob"]).unwrap();
        assert_eq!((a.hold_ms, a.hold_until, a.flushes), (1500, None, 0));
        let a = Args::try_parse_from([
            "gpu-kms-blob",
            "--hold-until",
            "/tmp/done",
            "--flushes",
            "20",
            "--hold-ms",
            "9000",
        ])
        .unwrap();
        assert_eq!(
            a.hold_until.as_deref(),
            Some(std::path::Path::new("/tmp/done"))
        );
        assert_eq!((a.flushes, a.hold_ms), (20, 9000));
        assert!(Args::try_parse_from(["gpu-kms-blob", "--flushes", "-1"]).is_err());
    }

    #[test]
    fn flushes_are_counted_timed_and_stop_at_an_error() {
        let mut calls = 0;
        let t = timed_flushes(3, || {
            calls += 1;
            std::thread::sleep(Duration::from_millis(if calls == 2 { 30 } else { 1 }));
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 3);
        assert!(t.max >= Duration::from_millis(30));
        assert_eq!(t.max_index, 1, "the second flush was the slow one");
        assert!(t.median < Duration::from_millis(30));
        assert!(t.total >= t.max + Duration::from_millis(2));
        assert_eq!(
            timed_flushes(0, || unreachable!()).unwrap(),
            FlushTimes::default()
        );
        let mut calls = 0;
        let r = timed_flushes(5, || {
            calls += 1;
            if calls == 2 {
                Err(Error::Unsupported("dirtyfb".into()))
            } else {
                Ok(())
            }
        });
        assert!(r.is_err());
        assert_eq!(calls, 2);
        assert_eq!(ms3(Duration::from_micros(1234)), "1.234");
        assert_eq!(ms3(Duration::ZERO), "0.000");
    }
}
