//! Everything needed to start Linux at its 64-bit entry point.

pub mod acpi;
pub mod bzimage_payload;
pub mod cpuid;
pub mod gdt;
pub mod initramfs;
pub mod kaslr;
pub mod kernel_cache;
pub mod loader;
pub mod paging;
pub mod prefault;
pub mod regs;
pub mod vmlinux;

use vm_memory::GuestMemoryMmap;

use crate::layout::{ACPI_START, BOOT_GDT_START, BOOT_IDT_START, PDPT_START, PD_START, PML4_START};
use crate::vm::PciConfigAccess;
pub use loader::{Decompressor, InitramfsForm, KernelEntry, KernelForm, LoaderError, Unpacking};

/// Errors writing the boot structures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Loading the kernel, initramfs or command line failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The ACPI tables could not be built.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
}

fn u64s_to_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the GDT, the empty IDT, the identity page tables and the ACPI tables
/// (which describe the 64-bit PCI window `mmio64`, base and size, and how PCI configuration
/// space is reached) into guest RAM.
pub fn write_boot_structures(
    mem: &GuestMemoryMmap,
    nr_vcpus: u8,
    mmio64: (u64, u64),
    pci_config: PciConfigAccess,
) -> Result<(), BootError> {
    loader::write_bytes(mem, BOOT_GDT_START, &u64s_to_bytes(&gdt::boot_gdt()), "GDT")?;
    loader::write_bytes(mem, BOOT_IDT_START, &0u64.to_le_bytes(), "IDT")?;
    let map = paging::identity_map();
    loader::write_bytes(mem, PML4_START, &u64s_to_bytes(&map.pml4), "PML4")?;
    loader::write_bytes(mem, PDPT_START, &u64s_to_bytes(&map.pdpt), "PDPT")?;
    loader::write_bytes(mem, PD_START, &u64s_to_bytes(&map.pd), "page directories")?;
    let tables = acpi::build(nr_vcpus, mmio64, pci_config)?;
    loader::write_bytes(mem, ACPI_START, &tables.bytes, "ACPI tables")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn structures_land_where_the_registers_point() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        write_boot_structures(&mem, 2, (1 << 32, 1 << 30), PciConfigAccess::Ecam).unwrap();
        let code: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(code, gdt::boot_gdt()[1]);
        let pml4e: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4e & !0xfff, PDPT_START);
        let last_pde: u64 = mem
            .read_obj(GuestAddress(PD_START + (4 * 512 - 1) * 8))
            .unwrap();
        assert_eq!(last_pde, 0xffe0_0000 | 0x83);
        let mut rsdp = [0u8; 8];
        mem.read_slice(&mut rsdp, GuestAddress(ACPI_START)).unwrap();
        assert_eq!(&rsdp, b"RSD PTR ");
    }
}
