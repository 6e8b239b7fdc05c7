//! Which parts of a BAR are mapped straight into the guest: the region's mmap-able areas
//! (all of it, or the kernel's sparse areas) minus the pages of the MSI-X table and PBA, which
//! the VMM must trap to emulate.

/// A byte range inside a region: (offset, size).
pub type Area = (u64, u64);

fn align_down(v: u64, page: u64) -> u64 {
    v & !(page - 1)
}

fn align_up(v: u64, page: u64) -> Option<u64> {
    v.checked_add(page - 1).map(|x| x & !(page - 1))
}

/// The page-aligned areas of a region of `size` bytes to map into the guest.
///
/// `mappable` is the region's MMAP flag, `sparse` the kernel's sparse mmap areas if any,
/// `holes` the ranges that must stay trapped (MSI-X table and PBA); `page` is the host page
/// size (a power of two). A region smaller than a page is never mapped.
pub fn mappable_areas(
    size: u64,
    mappable: bool,
    sparse: Option<&[Area]>,
    holes: &[Area],
    page: u64,
) -> Vec<Area> {
    if !mappable || size < page || !page.is_power_of_two() {
        return Vec::new();
    }
    let whole = [(0, size)];
    let base: &[Area] = sparse.unwrap_or(&whole);
    let mut areas: Vec<Area> = base
        .iter()
        .filter_map(|&(off, len)| {
            let end = off.checked_add(len)?.min(size);
            let start = align_up(off, page)?;
            let end = align_down(end, page);
            (start < end).then(|| (start, end - start))
        })
        .collect();
    for &(hoff, hlen) in holes {
        if hlen == 0 {
            continue;
        }
        let hstart = align_down(hoff, page);
        let hend = hoff
            .checked_add(hlen)
            .and_then(|e| align_up(e, page))
            .unwrap_or(u64::MAX);
        let mut next = Vec::with_capacity(areas.len() + 1);
        for (start, len) in areas {
            let end = start + len;
            if hend <= start || hstart >= end {
                next.push((start, len));
                continue;
            }
            if start < hstart {
                next.push((start, hstart - start));
            }
            if hend < end {
                next.push((hend, end - hend));
            }
        }
        areas = next;
    }
    areas.sort_unstable();
    areas
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 0x1000;

    #[test]
    fn whole_region_when_nothing_to_carve() {
        assert_eq!(
            mappable_areas(0x100_0000, true, None, &[], P),
            vec![(0, 0x100_0000)]
        );
    }

    #[test]
    fn small_or_unmappable_regions_are_trapped() {
        assert!(mappable_areas(0x100, true, None, &[], P).is_empty());
        assert!(mappable_areas(0x10000, false, None, &[], P).is_empty());
    }

    #[test]
    fn msix_table_and_pba_carved_out() {
        // Table at 0x2000 (0x100 bytes), PBA at 0x3800 (8 bytes), BAR 64 KiB.
        let areas = mappable_areas(0x10000, true, None, &[(0x2000, 0x100), (0x3800, 8)], P);
        assert_eq!(areas, vec![(0, 0x2000), (0x4000, 0xc000)]);
        // Table in the middle of a page: the whole page is trapped.
        let areas = mappable_areas(0x4000, true, None, &[(0x1800, 0x10)], P);
        assert_eq!(areas, vec![(0, 0x1000), (0x2000, 0x2000)]);
        // Table covering everything.
        assert!(mappable_areas(0x1000, true, None, &[(0, 0x800)], P).is_empty());
    }

    #[test]
    fn sparse_areas_respected_and_clamped() {
        let sparse = [(0x0, 0x2000), (0x8000, 0x10000), (0x3001, 0x10)];
        let areas = mappable_areas(0x10000, true, Some(&sparse), &[(0x9000, 0x10)], P);
        assert_eq!(areas, vec![(0, 0x2000), (0x8000, 0x1000), (0xa000, 0x6000)]);
    }

    #[test]
    fn hostile_values_do_not_overflow() {
        let sparse = [(u64::MAX - 10, 100)];
        assert!(mappable_areas(0x10000, true, Some(&sparse), &[(u64::MAX, 10)], P).is_empty());
        assert_eq!(
            mappable_areas(0x2000, true, None, &[(u64::MAX - 1, 10)], P),
            vec![(0, 0x2000)]
        );
    }
}
