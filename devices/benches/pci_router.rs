//! Cost of dispatching a guest MMIO access through `PciBarRouter` as the number of routed
//! BARs grows (a full bus has at most 31 devices x 6 BARs): the lookup is a BTreeMap range
//! query, so the time should stay nearly flat.

use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use devices::pci::{BarKind, BarReprogram, BarSpace, PciBar, PciBarRouter, PciDevice, PciSlot};

struct Regs(u32);

impl PciDevice for Regs {
    fn name(&self) -> String {
        "bench".into()
    }
    fn read_config_register(&mut self, _reg_idx: usize) -> u32 {
        0xffff_ffff
    }
    fn write_config_register(&mut self, _r: usize, _o: usize, _d: &[u8]) -> Option<BarReprogram> {
        None
    }
    fn bars(&self) -> Vec<PciBar> {
        Vec::new()
    }
    fn program_bar(&mut self, _index: usize, _addr: u64) -> Option<BarReprogram> {
        None
    }
    fn decodes(&self, _space: BarSpace) -> bool {
        true
    }
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.copy_from_slice(&self.0.to_le_bytes()[..data.len().min(4)]);
    }
    fn write_bar(&mut self, _bar: usize, _offset: u64, data: &[u8]) {
        self.0 = u32::from(data[0]);
    }
}

fn bench_router(c: &mut Criterion) {
    let mut group = c.benchmark_group("pci_router_mmio_read4");
    for n in [1usize, 16, 186] {
        let router = PciBarRouter::new();
        for i in 0..n {
            let dev: Arc<Mutex<dyn PciDevice>> = Arc::new(Mutex::new(Regs(i as u32)));
            let bar = PciBar {
                index: i % 6,
                kind: BarKind::Mem32 {
                    prefetchable: false,
                },
                size: 0x1000,
                addr: 0xc000_0000 + (i as u64) * 0x1000,
            };
            router.add_bar(PciSlot::root((i / 6) as u8), &bar, dev);
        }
        let last = 0xc000_0000 + (n as u64 - 1) * 0x1000 + 8;
        group.bench_with_input(BenchmarkId::from_parameter(n), &last, |b, &addr| {
            let mut buf = [0u8; 4];
            b.iter(|| router.read(BarSpace::Mmio, std::hint::black_box(addr), &mut buf));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_router);
criterion_main!(benches);
