//! Identity page tables for the 64-bit entry: the first [`IDENTITY_MAP_GIB`] GiB mapped with
//! 2 MiB pages (PML4 -> one PDPT -> one page directory per GiB).

use crate::layout::{IDENTITY_MAP_GIB, PDPT_START, PD_START, PML4_START};

/// Present | writable.
const PRESENT_RW: u64 = 0x3;
/// Present | writable | page size (a 2 MiB leaf in a page directory).
const PRESENT_RW_2M: u64 = 0x83;
const ENTRIES_PER_TABLE: usize = 512;
const PAGE_2M: u64 = 2 << 20;

/// The three levels of the boot identity map, each as 8-byte entries in table order.
pub struct IdentityMap {
    /// Written at [`PML4_START`].
    pub pml4: Vec<u64>,
    /// Written at [`PDPT_START`].
    pub pdpt: Vec<u64>,
    /// Written at [`PD_START`], `IDENTITY_MAP_GIB` tables back to back.
    pub pd: Vec<u64>,
}

/// Builds the identity map.
pub fn identity_map() -> IdentityMap {
    let gib = IDENTITY_MAP_GIB as usize;
    let pml4 = vec![PDPT_START | PRESENT_RW];
    let pdpt = (0..gib)
        .map(|i| (PD_START + i as u64 * 0x1000) | PRESENT_RW)
        .collect();
    let pd = (0..gib * ENTRIES_PER_TABLE)
        .map(|i| (i as u64 * PAGE_2M) | PRESENT_RW_2M)
        .collect();
    IdentityMap { pml4, pdpt, pd }
}

/// CR3 value for the identity map.
pub const fn cr3() -> u64 {
    PML4_START
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU does for a 2 MiB page.
    fn translate(map: &IdentityMap, va: u64) -> Option<u64> {
        let pml4e = *map.pml4.get(((va >> 39) & 0x1ff) as usize)?;
        assert_eq!(pml4e & 0xfff, PRESENT_RW);
        let pdpt_index = ((va >> 30) & 0x1ff) as usize;
        assert_eq!(pml4e & !0xfff, PDPT_START);
        let pdpte = *map.pdpt.get(pdpt_index)?;
        assert_eq!(pdpte & 0xfff, PRESENT_RW);
        let pd_table = ((pdpte & !0xfff) - PD_START) / 0x1000;
        let pde = *map
            .pd
            .get(pd_table as usize * ENTRIES_PER_TABLE + ((va >> 21) & 0x1ff) as usize)?;
        assert_eq!(pde & 0xfff, PRESENT_RW_2M);
        Some((pde & !0xfff) | (va & (PAGE_2M - 1)))
    }

    #[test]
    fn maps_four_gib_one_to_one() {
        let map = identity_map();
        assert_eq!(map.pml4.len(), 1);
        assert_eq!(map.pdpt.len(), IDENTITY_MAP_GIB as usize);
        assert_eq!(map.pd.len(), 512 * IDENTITY_MAP_GIB as usize);
        for va in [
            0,
            0x1000,
            0x10_0000,
            0x1234_5678,
            0xbfff_ffff,
            0xfee0_0000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&map, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&map, IDENTITY_MAP_GIB << 30), None);
        assert_eq!(cr3(), PML4_START);
    }
}
