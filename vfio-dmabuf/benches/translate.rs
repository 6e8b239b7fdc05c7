//! Translation + coalescing cost per page (goal: <= 10 ns/page).
//!
//! Blobs of 1, 64, 2025 (1080p XRGB) and 32768 one-page entries, contiguous
//! (ascending pages, coalesced to one range) or fully fragmented (every
//! other page, nothing coalesces), against region tables of 1, 6 and 64
//! regions (the blob's region sits in the middle of the table).
//!
//! The build machines' 2 cores are shared with other builds and QEMU, so
//! samples are timed with the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`)
//! rather than wall time: waiting for a core is not counted. Set
//! `DMABUF_BENCH_WALL=1` to time with wall time instead.

use std::os::fd::AsFd;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use vfio_dmabuf::{BlobEntry, DeviceRegistry, RegionInfo};

const P: u64 = 4096;
const REGION_SIZE: u64 = 1 << 30; // room for 65536 pages at stride 2

fn registry(regions: usize) -> (DeviceRegistry, u64) {
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut reg = DeviceRegistry::with_limits(P, 32768);
    let devices = regions.div_ceil(6);
    let ids: Vec<_> = (0..devices)
        .map(|_| reg.register_device("bench", null.as_fd()).unwrap())
        .collect();
    let mut target = 0;
    for i in 0..regions {
        let base = 0x100_0000_0000 + i as u64 * REGION_SIZE;
        let index = (i % 6) as u32;
        reg.set_region(
            ids[i / 6],
            RegionInfo::new(index, base, REGION_SIZE, u64::from(index) << 40, 7),
        )
        .unwrap();
        if i == regions / 2 {
            target = base;
        }
    }
    (reg, target)
}

fn blob(base: u64, pages: u64, stride: u64) -> Vec<BlobEntry> {
    (0..pages)
        .map(|i| BlobEntry::new(base + i * stride * P, P))
        .collect()
}

/// CPU time consumed by the calling thread.
struct ThreadCpuTime {
    wall: WallTime,
}

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for clock_gettime.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

fn bench<M: Measurement>(c: &mut Criterion<M>) {
    for regions in [1usize, 6, 64] {
        let (reg, base) = registry(regions);
        let mut g = c.benchmark_group(format!("translate/regions={regions}"));
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_millis(1200));
        g.sample_size(20);
        for pages in [1u64, 64, 2025, 32768] {
            for (name, stride) in [("contiguous", 1u64), ("fragmented", 2)] {
                let es = blob(base, pages, stride);
                let expect = if stride == 1 { 1 } else { pages as usize };
                assert_eq!(reg.translate(&es).unwrap().ranges.len(), expect);
                g.throughput(Throughput::Elements(pages));
                g.bench_with_input(BenchmarkId::new(name, pages), &es, |b, es| {
                    b.iter(|| reg.translate(std::hint::black_box(es)).unwrap())
                });
            }
        }
        g.finish();
    }
}

fn main() {
    let wall = std::env::var_os("DMABUF_BENCH_WALL").is_some();
    if wall {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default()
            .with_measurement(ThreadCpuTime { wall: WallTime })
            .configure_from_args();
        bench(&mut c);
        c.final_summary();
    }
}
