//! Property test: `DeviceRegistry::translate` against a simple reference
//! model (linear region scan, page-by-page expansion, then run merging) on
//! random region tables and entry lists.

use std::os::fd::AsFd;

use proptest::prelude::*;
use vfio_dmabuf::{
    BlobEntry, DeviceId, DeviceRegistry, DmaBufError, DmaRange, RegionInfo, Translation,
};

const P: u64 = 4096;
const MAX_ENTRIES: usize = 12;

#[derive(Debug, Clone)]
struct Region {
    device: DeviceId,
    index: u32,
    base: u64,
    size: u64,
}

/// Regions laid out left to right with random gaps; (device, index) unique.
fn regions() -> impl Strategy<Value = Vec<Region>> {
    prop::collection::vec(
        (
            0u32..3,
            0u32..8,
            0u64..4,
            prop_oneof![4 => 1u64..16, 1 => Just(0)],
        ),
        1..8,
    )
    .prop_map(|specs| {
        let mut out: Vec<Region> = Vec::new();
        let mut cursor = 0x1000_0000u64;
        for (dev, index, gap, pages) in specs {
            if out.iter().any(|r| r.device.0 == dev && r.index == index) {
                continue;
            }
            cursor += gap * P;
            // pages == 0 stands for a region smaller than a page (like ivshmem BAR0)
            let size = if pages == 0 { 0x100 } else { pages * P };
            out.push(Region {
                device: DeviceId(dev),
                index,
                base: cursor,
                size,
            });
            cursor += size.max(P);
        }
        out
    })
}

/// Entries spread over random regions (`single` = all in region 0, mostly valid).
fn entries(
    regions: Vec<Region>,
    single: bool,
) -> impl Strategy<Value = (Vec<Region>, Vec<BlobEntry>)> {
    let n = if single { 1 } else { regions.len() };
    let kinds = if single { 5u8..60 } else { 0u8..20 };
    let entry = (0..n, 0u64..20, 0u64..4, kinds);
    (
        Just(regions.clone()),
        prop::collection::vec(entry, 0..MAX_ENTRIES + 2),
    )
        .prop_map(move |(regions, raw)| {
            let es = raw
                .into_iter()
                .map(|(r, page, pages, kind)| {
                    let reg = &regions[r];
                    // single-region blobs mostly stay inside the region
                    let page = if single && kind % 4 != 0 {
                        page % (reg.size / P).max(1)
                    } else {
                        page
                    };
                    let addr = reg.base + page * P;
                    match kind {
                        0 => BlobEntry::new(addr, 0),
                        1 => BlobEntry::new(addr + 0x800, P),
                        2 => BlobEntry::new(addr, P + 0x10),
                        3 => BlobEntry::new(u64::MAX - P + 1, 2 * P),
                        4 => BlobEntry::new(0x100, P),
                        _ => BlobEntry::new(addr, pages.max(1) * P),
                    }
                })
                .collect();
            (regions, es)
        })
}

/// The reference: obviously-correct, slow.
fn model(regions: &[Region], es: &[BlobEntry]) -> Result<Translation, DmaBufError> {
    if es.is_empty() {
        return Err(DmaBufError::NoEntries);
    }
    if es.len() > MAX_ENTRIES {
        return Err(DmaBufError::TooManyEntries {
            count: es.len(),
            max: MAX_ENTRIES,
        });
    }
    let find = |a: u64| regions.iter().find(|r| a >= r.base && a < r.base + r.size);
    let mut first: Option<&Region> = None;
    let mut pages: Vec<u64> = Vec::new();
    let mut total = 0;
    for (i, e) in es.iter().enumerate() {
        if e.len == 0 {
            return Err(DmaBufError::ZeroLength { entry: i });
        }
        if e.addr.checked_add(e.len).is_none() {
            return Err(DmaBufError::EntryOverflow {
                entry: i,
                addr: e.addr,
                len: e.len,
            });
        }
        let r = find(e.addr);
        let f = match (first, r) {
            (None, None) => {
                return Err(DmaBufError::NotInRegion {
                    entry: i,
                    addr: e.addr,
                })
            }
            (None, Some(r)) => {
                first = Some(r);
                r
            }
            (Some(f), _) => f,
        };
        match r {
            None => {
                return Err(DmaBufError::NotInRegion {
                    entry: i,
                    addr: e.addr,
                })
            }
            Some(r) if r.device != f.device => {
                return Err(DmaBufError::DifferentDevice {
                    entry: i,
                    addr: e.addr,
                })
            }
            Some(r) if r.index != f.index => {
                return Err(DmaBufError::DifferentRegion {
                    entry: i,
                    addr: e.addr,
                    expected: f.index,
                    found: r.index,
                })
            }
            Some(_) => {}
        }
        if e.addr + e.len > f.base + f.size {
            return Err(DmaBufError::PastRegionEnd {
                entry: i,
                addr: e.addr,
                len: e.len,
                region_end: f.base + f.size,
            });
        }
        let off = e.addr - f.base;
        if off % P != 0 || e.len % P != 0 {
            return Err(DmaBufError::Unaligned {
                entry: i,
                offset: off,
                len: e.len,
                page_size: P,
            });
        }
        for k in 0..e.len / P {
            pages.push(off + k * P);
        }
        total += e.len;
    }
    // Merge runs of consecutive pages, but only across entry boundaries that
    // continue the previous range: page-level expansion already splits entries
    // into pages, and consecutive pages in the list are merged.
    let mut ranges: Vec<DmaRange> = Vec::new();
    for p in pages {
        match ranges.last_mut() {
            Some(l) if l.offset + l.len == p => l.len += P,
            _ => ranges.push(DmaRange { offset: p, len: P }),
        }
    }
    let f = first.expect("at least one entry");
    // `registry` sets the regions in order, one generation each.
    let position = regions
        .iter()
        .position(|r| r.device == f.device && r.index == f.index)
        .expect("first region is listed");
    Ok(Translation {
        device: f.device,
        region_index: f.index,
        ranges,
        total_len: total,
        generation: position as u64 + 1,
    })
}

fn registry(regions: &[Region]) -> DeviceRegistry {
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut reg = DeviceRegistry::with_limits(P, MAX_ENTRIES);
    for _ in 0..3 {
        reg.register_device("d", null.as_fd()).unwrap();
    }
    for r in regions {
        reg.set_region(
            r.device,
            RegionInfo::new(r.index, r.base, r.size, u64::from(r.index) << 40, 7),
        )
        .unwrap();
    }
    reg
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn translate_matches_the_reference_model((regions, es) in regions().prop_flat_map(|r| entries(r, false))) {
        let reg = registry(&regions);
        let got = reg.translate(&es);
        let want = model(&regions, &es);
        prop_assert_eq!(&got, &want);
        if let Err(e) = got {
            prop_assert!(e.is_guest_fault());
        }
    }

    #[test]
    fn single_region_blobs_match_the_reference_model((regions, es) in regions().prop_flat_map(|r| entries(r, true))) {
        let reg = registry(&regions);
        prop_assert_eq!(reg.translate(&es), model(&regions, &es));
    }

    #[test]
    fn lookups_agree_with_a_linear_scan(regions in regions(), probes in prop::collection::vec(0x0fff_f000u64..0x1100_0000, 64)) {
        let reg = registry(&regions);
        for a in probes {
            let want = regions.iter().find(|r| a >= r.base && a < r.base + r.size).map(|r| (r.device, r.index));
            let got = reg.lookup_gpa(a).map(|(k, _)| (k.device, k.index));
            prop_assert_eq!(got, want);
        }
    }
}

/// The generators do reach successful translations with several ranges
/// (otherwise the property tests would only compare errors).
#[test]
fn generators_reach_multi_range_successes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strat = regions().prop_flat_map(|r| entries(r, true));
    let mut multi = 0;
    for _ in 0..500 {
        let (regions, es) = strat.new_tree(&mut runner).unwrap().current();
        if let Ok(t) = model(&regions, &es) {
            if t.ranges.len() > 1 {
                multi += 1;
            }
        }
    }
    assert!(multi > 50, "only {multi} multi-range successes");
}
