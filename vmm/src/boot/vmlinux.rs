//! The kernel proper as a bzImage's payload holds it: an x86-64 `vmlinux` ELF file followed by
//! the relocation table the kernel build appends when the kernel can be randomised (KASLR).
//!
//! [`Unpacker`] takes the decompressed stream piece by piece and writes the load segments
//! straight into guest memory at the chosen place, keeping only the relocation table; then it
//! applies that table for the chosen virtual offset, as the kernel's own decompressor does. No
//! copy of the whole kernel is held on the host. (linux-loader's ELF loader needs a seekable
//! file, hence this small loader of our own.)

use thiserror::Error;
use vm_memory::{
    ByteValued, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, ReadVolatile, VolatileSlice,
};

/// Virtual address of physical 0 in the x86-64 kernel mapping (`__START_KERNEL_map`).
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// More program headers than any kernel has; a bound on what a file can make us read.
const MAX_PHDRS: usize = 64;
/// The program headers must lie within this many bytes of the start (a kernel's are at 64).
const MAX_HEAD: u64 = 64 << 10;

/// Why an unpacked kernel cannot be loaded or relocated by the VMM.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VmlinuxError {
    /// Not a little-endian x86-64 ELF file with load segments inside the file.
    #[error("not an x86-64 ELF kernel: {0}")]
    NotElf(&'static str),
    /// The kernel does not fit where it was to go.
    #[error("the kernel ({span:#x} bytes at {phys:#x}) does not fit in guest RAM")]
    DoesNotFit {
        /// Where it was to go.
        phys: u64,
        /// Its size in memory.
        span: u64,
    },
    /// The bytes after the ELF file are not a relocation table the VMM knows.
    #[error("unknown relocation table after the ELF file ({0})")]
    BadRelocations(&'static str),
    /// The unpacked kernel's file could not be read.
    #[error("cannot read the unpacked kernel: {0}")]
    Read(String),
    /// A relocation points outside the loaded image.
    #[error("relocation of {width} bytes at {vaddr:#x} lies outside the kernel image")]
    RelocationOutside {
        /// The kernel virtual address.
        vaddr: u64,
        /// 4 or 8.
        width: u64,
    },
}

/// A PT_LOAD segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    file_offset: u64,
    paddr: u64,
    file_size: u64,
    mem_size: u64,
}

/// The ELF file's shape, from its header and program headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    segments: Vec<Segment>,
    entry: u64,
    /// End of the ELF file (headers, segments, section headers): the relocation table follows.
    elf_end: u64,
    /// Length of the whole stream.
    file_len: u64,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

impl Layout {
    /// How many leading bytes [`Layout::parse`] needs, once it has the ELF header.
    fn head_len(ehdr: &[u8]) -> Result<u64, VmlinuxError> {
        if ehdr[..4] != ELF_MAGIC || ehdr[4] != ELFCLASS64 || ehdr[5] != ELFDATA2LSB {
            return Err(VmlinuxError::NotElf("no little-endian ELF64 header"));
        }
        if u16_at(ehdr, 18) != EM_X86_64 {
            return Err(VmlinuxError::NotElf("not for x86-64"));
        }
        let phnum = usize::from(u16_at(ehdr, 56));
        if usize::from(u16_at(ehdr, 54)) != PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
            return Err(VmlinuxError::NotElf("unexpected program header table"));
        }
        u64_at(ehdr, 32)
            .checked_add((phnum * PHDR_SIZE) as u64)
            .filter(|&end| end <= MAX_HEAD)
            .ok_or(VmlinuxError::NotElf("program headers not at the start"))
    }

    /// Parses the ELF header and program headers at the start of a file of `file_len` bytes.
    fn parse(head: &[u8], file_len: u64) -> Result<Self, VmlinuxError> {
        let ehdr = &head[..EHDR_SIZE];
        let phdrs_end = Self::head_len(ehdr)?;
        let phoff = u64_at(ehdr, 32) as usize;
        let shdrs_end = u64_at(ehdr, 40)
            .checked_add(u64::from(u16_at(ehdr, 58)) * u64::from(u16_at(ehdr, 60)))
            .filter(|&e| e <= file_len)
            .ok_or(VmlinuxError::NotElf("section headers outside the file"))?;
        let mut segments = Vec::new();
        let mut elf_end = phdrs_end.max(shdrs_end);
        for i in 0..usize::from(u16_at(ehdr, 56)) {
            let ph = &head[phoff + i * PHDR_SIZE..][..PHDR_SIZE];
            if u32_at(ph, 0) != PT_LOAD || u64_at(ph, 32) == 0 {
                continue;
            }
            let seg = Segment {
                file_offset: u64_at(ph, 8),
                paddr: u64_at(ph, 24),
                file_size: u64_at(ph, 32),
                mem_size: u64_at(ph, 40),
            };
            let file_end = seg
                .file_offset
                .checked_add(seg.file_size)
                .filter(|&e| e <= file_len)
                .ok_or(VmlinuxError::NotElf("a load segment lies outside the file"))?;
            if seg.mem_size < seg.file_size || seg.paddr.checked_add(seg.mem_size).is_none() {
                return Err(VmlinuxError::NotElf("a load segment has impossible sizes"));
            }
            elf_end = elf_end.max(file_end);
            segments.push(seg);
        }
        if segments.is_empty() {
            return Err(VmlinuxError::NotElf("no load segment"));
        }
        segments.sort_by_key(|s| s.paddr);
        if segments
            .windows(2)
            .any(|w| w[0].paddr + w[0].mem_size > w[1].paddr)
        {
            return Err(VmlinuxError::NotElf("load segments overlap"));
        }
        let layout = Self {
            segments,
            entry: u64_at(ehdr, 24),
            elf_end,
            file_len,
        };
        if !(layout.link_base()..layout.link_base() + layout.span()).contains(&layout.entry) {
            return Err(VmlinuxError::NotElf(
                "the entry point lies outside the image",
            ));
        }
        Ok(layout)
    }

    /// Lowest physical address of the load segments: where the kernel was linked to run
    /// (`LOAD_PHYSICAL_ADDR`).
    pub fn link_base(&self) -> u64 {
        self.segments[0].paddr
    }

    /// Bytes from [`Self::link_base`] to the end of the last segment in memory (`_end`).
    pub fn span(&self) -> u64 {
        let last = self.segments.last().expect("at least one segment");
        last.paddr + last.mem_size - self.link_base()
    }

    /// Whether bytes follow the ELF file: the relocation table of a kernel built to be
    /// randomised.
    pub fn carries_relocations(&self) -> bool {
        self.file_len > self.elf_end
    }

    /// The guest RAM the kernel occupies when its lowest segment is at `phys`: one contiguous
    /// piece of it must hold the whole span.
    fn image_in<'m>(
        &self,
        mem: &'m GuestMemoryMmap,
        phys: u64,
    ) -> Result<VolatileSlice<'m, ()>, VmlinuxError> {
        mem.get_slice(GuestAddress(phys), self.span() as usize)
            .map_err(|_| VmlinuxError::DoesNotFit {
                phys,
                span: self.span(),
            })
    }

    /// The entry point's offset from [`Self::link_base`].
    pub fn entry_offset(&self) -> u64 {
        self.entry - self.link_base()
    }

    /// The offset from [`Self::link_base`] of the `width` file-backed bytes at kernel virtual
    /// address `vaddr`, if they lie in one segment.
    fn image_offset(&self, vaddr: u64, width: u64) -> Option<u64> {
        let paddr = vaddr.wrapping_sub(START_KERNEL_MAP);
        self.segments
            .iter()
            .find(|s| {
                paddr >= s.paddr
                    && paddr
                        .checked_add(width)
                        .is_some_and(|e| e <= s.paddr + s.file_size)
            })
            .map(|_| paddr - self.link_base())
    }
}

/// The relocation table: kernel virtual addresses (sign-extended 32-bit values) of the fields
/// that hold kernel addresses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relocations {
    /// 64-bit fields: add the offset.
    abs64: Vec<i32>,
    /// 32-bit fields (sign-extended addresses): add the offset.
    abs32: Vec<i32>,
    /// 32-bit fields holding "something minus a kernel address" (older kernels' per-CPU
    /// references): subtract the offset.
    inverse32: Vec<i32>,
}

impl Relocations {
    /// Parses the table after the ELF file. Laid out as 32-bit words: a zero, the 64-bit
    /// relocations, a zero, [the inverse 32-bit relocations, a zero,] the 32-bit relocations;
    /// no entry is zero. Kernels since per-CPU data stopped being zero-based have no inverse
    /// section. Nothing after the ELF file: a kernel built without relocations.
    fn parse(tail: &[u8]) -> Result<Option<Self>, VmlinuxError> {
        if tail.is_empty() {
            return Ok(None);
        }
        if !tail.len().is_multiple_of(4) {
            return Err(VmlinuxError::BadRelocations("not whole 32-bit words"));
        }
        let words: Vec<i32> = tail
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if words[0] != 0 {
            return Err(VmlinuxError::BadRelocations("no leading terminator"));
        }
        let sections: Vec<&[i32]> = words[1..].split(|&w| w == 0).collect();
        let (abs64, inverse32, abs32) = match sections.as_slice() {
            [abs64, abs32] => (*abs64, &[][..], *abs32),
            [abs64, inverse32, abs32] => (*abs64, *inverse32, *abs32),
            _ => {
                return Err(VmlinuxError::BadRelocations(
                    "neither two nor three sections",
                ))
            }
        };
        Ok(Some(Self {
            abs64: abs64.to_vec(),
            abs32: abs32.to_vec(),
            inverse32: inverse32.to_vec(),
        }))
    }
}

/// What a relocation does to its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A 64-bit address: add the offset.
    Add64,
    /// A sign-extended 32-bit address: add the offset.
    Add32,
    /// A 32-bit "something minus an address": subtract the offset.
    Sub32,
}

impl Field {
    fn width(self) -> u64 {
        match self {
            Field::Add64 => 8,
            Field::Add32 | Field::Sub32 => 4,
        }
    }
}

/// Where an unpacked kernel went.
#[derive(Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// Its ELF layout.
    pub layout: Layout,
    /// Its relocation table, if it has one.
    pub relocations: Option<Relocations>,
}

/// Writes a decompressed kernel stream into guest memory at `phys` as it arrives.
pub struct Unpacker<'a> {
    mem: &'a GuestMemoryMmap,
    phys: u64,
    file_len: u64,
    /// Bytes of the stream seen so far.
    pos: u64,
    /// The first bytes, until the layout is known.
    head: Vec<u8>,
    /// The layout and the guest RAM of the kernel's span, once the headers have arrived.
    placed: Option<(Layout, VolatileSlice<'a, ()>)>,
    tail: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    /// An unpacker of a `file_len`-byte stream whose lowest segment goes to `phys`; `place`
    /// picks `phys` from the layout (link base and span) once the headers have arrived.
    pub fn new(mem: &'a GuestMemoryMmap, file_len: u64) -> Self {
        Self {
            mem,
            phys: 0,
            file_len,
            pos: 0,
            head: Vec::new(),
            placed: None,
            tail: Vec::new(),
        }
    }

    /// Takes the next piece of the stream. `place` is called once, with the layout, and
    /// returns the physical address for the lowest segment.
    pub fn write(
        &mut self,
        mut chunk: &[u8],
        place: &mut dyn FnMut(&Layout) -> u64,
    ) -> Result<(), VmlinuxError> {
        if self.placed.is_none() {
            let want = if self.head.len() < EHDR_SIZE {
                EHDR_SIZE
            } else {
                Layout::head_len(&self.head[..EHDR_SIZE])? as usize
            };
            let take = (want - self.head.len().min(want)).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.head.len() < want {
                return Ok(());
            }
            if want == EHDR_SIZE {
                // The ELF header is complete: go on with the program headers.
                return self.write(chunk, place);
            }
            let layout = Layout::parse(&self.head, self.file_len)?;
            self.phys = place(&layout);
            let image = layout.image_in(self.mem, self.phys)?;
            self.placed = Some((layout, image));
            // The head's own bytes: load segments rarely start there, but may.
            let head = std::mem::take(&mut self.head);
            self.pos = 0;
            self.route(&head)?;
        }
        self.route(chunk)
    }

    /// Copies the stream bytes `chunk` (at `self.pos`) to their segments and the tail.
    fn route(&mut self, chunk: &[u8]) -> Result<(), VmlinuxError> {
        let (layout, image) = self.placed.as_ref().expect("layout known");
        let (start, end) = (self.pos, self.pos + chunk.len() as u64);
        for s in &layout.segments {
            let (a, b) = (
                start.max(s.file_offset),
                end.min(s.file_offset + s.file_size),
            );
            if a < b {
                let at = (s.paddr - layout.link_base() + (a - s.file_offset)) as usize;
                image
                    .subslice(at, (b - a) as usize)
                    .expect("segments lie within the span")
                    .copy_from(&chunk[(a - start) as usize..(b - start) as usize]);
            }
        }
        if end > layout.elf_end {
            let from = layout.elf_end.max(start);
            self.tail
                .extend_from_slice(&chunk[(from - start) as usize..]);
        }
        self.pos = end;
        Ok(())
    }

    /// Ends the stream: the kernel is in guest memory at `phys`. Returns its layout and
    /// relocation table.
    pub fn finish(self) -> Result<(u64, Unpacked), VmlinuxError> {
        let (layout, _) = self
            .placed
            .ok_or(VmlinuxError::NotElf("shorter than its headers"))?;
        let relocations = Relocations::parse(&self.tail)?;
        Ok((
            self.phys,
            Unpacked {
                layout,
                relocations,
            },
        ))
    }
}

impl Unpacked {
    /// Loads an unpacked kernel of `file_len` bytes from `file` (a kernel cache entry): like
    /// [`Unpacker`], but each segment is read straight into guest memory, with no copy on the
    /// way. `place` picks the physical address of the lowest segment from the layout.
    pub fn read_from(
        mem: &GuestMemoryMmap,
        file: &mut std::fs::File,
        file_len: u64,
        place: &mut dyn FnMut(&Layout) -> u64,
    ) -> Result<(u64, Self), VmlinuxError> {
        use std::io::{Read, Seek, SeekFrom};
        let io = |e: std::io::Error| VmlinuxError::Read(e.to_string());
        let mut head = vec![0u8; EHDR_SIZE];
        file.rewind().map_err(io)?;
        file.read_exact(&mut head).map_err(io)?;
        let head_len = Layout::head_len(&head)? as usize;
        if head_len > EHDR_SIZE {
            head.resize(head_len, 0);
            file.read_exact(&mut head[EHDR_SIZE..]).map_err(io)?;
        }
        let layout = Layout::parse(&head, file_len)?;
        let phys = place(&layout);
        let image = layout.image_in(mem, phys)?;
        for s in &layout.segments {
            file.seek(SeekFrom::Start(s.file_offset)).map_err(io)?;
            let at = (s.paddr - layout.link_base()) as usize;
            let mut dst = image
                .subslice(at, s.file_size as usize)
                .expect("segments lie within the span");
            file.read_exact_volatile(&mut dst)
                .map_err(|e| VmlinuxError::Read(e.to_string()))?;
        }
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(layout.elf_end)).map_err(io)?;
        file.take(file_len - layout.elf_end.min(file_len))
            .read_to_end(&mut tail)
            .map_err(io)?;
        let relocations = Relocations::parse(&tail)?;
        Ok((
            phys,
            Self {
                layout,
                relocations,
            },
        ))
    }

    /// Moves the kernel's virtual base up by `offset` bytes in guest memory (the kernel is at
    /// `phys`): every address the relocation table names is adjusted. Returns how many fields
    /// changed. All targets are checked before any is written. Only while the kernel is loaded,
    /// before any vCPU exists: the fields are updated with plain memory accesses (see [`update`]).
    pub(crate) fn relocate(
        &self,
        mem: &GuestMemoryMmap,
        phys: u64,
        offset: u64,
    ) -> Result<usize, VmlinuxError> {
        let Some(relocs) = self.relocations.as_ref() else {
            return Ok(0);
        };
        let kinds = [
            (&relocs.abs64, Field::Add64),
            (&relocs.abs32, Field::Add32),
            (&relocs.inverse32, Field::Sub32),
        ];
        let field_at = |reloc: i32, kind: Field| {
            let vaddr = i64::from(reloc) as u64;
            self.layout
                .image_offset(vaddr, kind.width())
                .ok_or(VmlinuxError::RelocationOutside {
                    vaddr,
                    width: kind.width(),
                })
        };
        // Every target is checked before any is written.
        for (list, kind) in kinds {
            for &reloc in list {
                field_at(reloc, kind)?;
            }
        }
        let image = self.layout.image_in(mem, phys)?;
        for (list, kind) in kinds {
            for &reloc in list {
                // Checked above against the layout, whose span the slice covers.
                let at = field_at(reloc, kind).expect("checked offset") as usize;
                match kind {
                    Field::Add64 => update(&image, at, |v: u64| v.wrapping_add(offset)),
                    Field::Add32 => update(&image, at, |v: u32| v.wrapping_add(offset as u32)),
                    Field::Sub32 => update(&image, at, |v: u32| v.wrapping_sub(offset as u32)),
                }
            }
        }
        let count = kinds.iter().map(|(list, _)| list.len()).sum();
        Ok(count)
    }
}

/// Replaces the `T` at byte `at` of `image` (any alignment) with `f` of it. For the kernel's
/// image while it is loaded, before any vCPU runs: a plain access instead of `read_obj` and
/// `write_obj`, whose per-call cost adds up over a relocation table (Debian's kernel has 338479
/// fields; relocating it took 6 ms through them and 1.5-2.8 ms this way, natively on a 2-core
/// development machine). Panics if the field is not wholly in `image`.
fn update<T: ByteValued>(image: &VolatileSlice<'_, ()>, at: usize, f: impl FnOnce(T) -> T) {
    let end = at.checked_add(std::mem::size_of::<T>());
    assert!(
        end.is_some_and(|end| end <= image.len()),
        "field outside the image"
    );
    let guard = image.ptr_guard_mut();
    // SAFETY: the bytes `at..at + size_of::<T>()` lie in `image` (asserted above), which is mapped
    // guest memory for its whole length while the slice lives; the unaligned read and write need no
    // alignment, and `T: ByteValued` is valid for any bytes. Nothing else accesses this memory: the
    // kernel is relocated while it is loaded, before the vCPUs are created.
    unsafe {
        let field = guard.as_ptr().add(at).cast::<T>();
        field.write_unaligned(f(field.read_unaligned()));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vm_memory::Bytes;

    /// An x86-64 vmlinux: one PT_LOAD of `payload` at physical `paddr` (virtual
    /// `START_KERNEL_MAP + paddr`) with `bss` more bytes in memory, entry `entry`, followed by
    /// `tail` (a relocation table or nothing).
    pub(crate) fn vmlinux(
        paddr: u64,
        entry: u64,
        payload: &[u8],
        bss: u64,
        tail: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![0u8; EHDR_SIZE + PHDR_SIZE];
        f[..4].copy_from_slice(&ELF_MAGIC);
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = &mut f[EHDR_SIZE..];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&7u32.to_le_bytes()); // R|W|X
        ph[8..16].copy_from_slice(&((EHDR_SIZE + PHDR_SIZE) as u64).to_le_bytes()); // p_offset
        ph[16..24].copy_from_slice(&(START_KERNEL_MAP + paddr).to_le_bytes()); // p_vaddr
        ph[24..32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
        ph[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes()); // p_filesz
        ph[40..48].copy_from_slice(&(payload.len() as u64 + bss).to_le_bytes()); // p_memsz
        ph[48..56].copy_from_slice(&0x20_0000u64.to_le_bytes()); // p_align
        f.extend_from_slice(payload);
        f.extend_from_slice(tail);
        f
    }

    /// A relocation table of 64-bit, [inverse 32-bit,] and 32-bit entries.
    pub(crate) fn table(abs64: &[u64], inverse32: Option<&[u64]>, abs32: &[u64]) -> Vec<u8> {
        let word = |v: u64| (v as u32).to_le_bytes();
        let mut t = Vec::new();
        t.extend_from_slice(&[0; 4]);
        abs64.iter().for_each(|&v| t.extend_from_slice(&word(v)));
        t.extend_from_slice(&[0; 4]);
        if let Some(inv) = inverse32 {
            inv.iter().for_each(|&v| t.extend_from_slice(&word(v)));
            t.extend_from_slice(&[0; 4]);
        }
        abs32.iter().for_each(|&v| t.extend_from_slice(&word(v)));
        t
    }

    const BASE: u64 = 0x100_0000;
    const V: u64 = START_KERNEL_MAP + BASE;
    const PHYS: u64 = 0x200_0000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
    }

    /// A 64-byte kernel body: a 64-bit address at 0, a 32-bit one at 8, an inverse one at 12.
    fn body() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[0..8].copy_from_slice(&(V + 0x20).to_le_bytes());
        b[8..12].copy_from_slice(&((V + 0x30) as u32).to_le_bytes());
        b[12..16].copy_from_slice(&(0x1000u32.wrapping_sub((V + 0x10) as u32)).to_le_bytes());
        b[16..].fill(0x5a);
        b
    }

    /// Streams `file` in pieces of `piece` bytes to guest memory at `PHYS`.
    fn unpack(
        mem: &GuestMemoryMmap,
        file: &[u8],
        piece: usize,
    ) -> Result<(u64, Unpacked), VmlinuxError> {
        let mut u = Unpacker::new(mem, file.len() as u64);
        let mut placed = 0;
        for c in file.chunks(piece) {
            u.write(c, &mut |l: &Layout| {
                placed += 1;
                assert_eq!((l.link_base(), l.entry_offset()), (BASE, 0x10));
                PHYS
            })?;
        }
        assert!(placed <= 1);
        u.finish()
    }

    #[test]
    fn segments_arrive_at_their_place_whatever_the_pieces() {
        let file = vmlinux(
            BASE,
            BASE + 0x10,
            &body(),
            0x1000,
            &table(&[V], None, &[V + 8]),
        );
        for piece in [1, 7, 64, 100, 4096] {
            let m = mem();
            let (phys, k) = unpack(&m, &file, piece).unwrap();
            assert_eq!(phys, PHYS);
            assert_eq!(k.layout.span(), 64 + 0x1000);
            let mut got = [0u8; 64];
            m.read_slice(&mut got, GuestAddress(PHYS)).unwrap();
            assert_eq!(&got[..], &body()[..], "pieces of {piece}");
            assert_eq!(m.read_obj::<u8>(GuestAddress(PHYS + 64)).unwrap(), 0);
            assert_eq!(k.relocations.as_ref().unwrap().abs32.len(), 1);
        }
    }

    #[test]
    fn relocation_moves_every_listed_address_and_nothing_else() {
        for inverse in [false, true] {
            let tail = if inverse {
                table(&[V], Some(&[V + 12]), &[V + 8])
            } else {
                table(&[V], None, &[V + 8])
            };
            let m = mem();
            let (phys, k) = unpack(
                &m,
                &vmlinux(BASE, BASE + 0x10, &body(), 0x1000, &tail),
                4096,
            )
            .unwrap();
            let off = 0x2a0_0000;
            assert_eq!(
                k.relocate(&m, phys, off).unwrap(),
                if inverse { 3 } else { 2 }
            );
            let mut b = [0u8; 64];
            m.read_slice(&mut b, GuestAddress(PHYS)).unwrap();
            assert_eq!(u64_at(&b, 0), V + 0x20 + off);
            assert_eq!(u32_at(&b, 8), (V + 0x30 + off) as u32);
            let inv_want = if inverse {
                0x1000u32.wrapping_sub((V + 0x10 + off) as u32)
            } else {
                0x1000u32.wrapping_sub((V + 0x10) as u32)
            };
            assert_eq!(u32_at(&b, 12), inv_want);
            assert!(b[16..].iter().all(|&x| x == 0x5a));
        }
    }

    #[test]
    fn a_field_is_updated_in_place_at_any_alignment() {
        let m = mem();
        let image = m.get_slice(GuestAddress(0x1000), 32).unwrap();
        m.write_slice(&[0xaa; 32], GuestAddress(0x1000)).unwrap();
        m.write_obj(0x1122_3344_5566_7788u64, GuestAddress(0x1003))
            .unwrap();
        update(&image, 3, |v: u64| v.wrapping_add(0x10));
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(0x1003)).unwrap(),
            0x1122_3344_5566_7798
        );
        update(&image, 28, |v: u32| v.wrapping_sub(1));
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(0x101c)).unwrap(),
            0xaaaa_aaa9
        );
        // The bytes around the fields are untouched.
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x1002)).unwrap(), 0xaa);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x100b)).unwrap(), 0xaa);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x101b)).unwrap(), 0xaa);
    }

    #[test]
    #[should_panic(expected = "field outside the image")]
    fn a_field_past_the_image_is_refused() {
        let m = mem();
        let image = m.get_slice(GuestAddress(0x1000), 32).unwrap();
        update(&image, 29, |v: u32| v);
    }

    #[test]
    fn a_kernel_without_a_table_has_no_relocations() {
        let m = mem();
        let (phys, k) = unpack(&m, &vmlinux(BASE, BASE + 0x10, &body(), 0, &[]), 4096).unwrap();
        assert!(k.relocations.is_none());
        assert_eq!(k.relocate(&m, phys, 0x20_0000), Ok(0));
        assert_eq!(m.read_obj::<u64>(GuestAddress(PHYS)).unwrap(), V + 0x20);
    }

    #[test]
    fn a_relocation_outside_the_image_changes_nothing() {
        // Into the bss (no file bytes) and straddling the end.
        for bad in [V + 64, V + 62] {
            let m = mem();
            let tail = table(&[V], None, &[V + 8, bad]);
            let file = vmlinux(BASE, BASE + 0x10, &body(), 0x1000, &tail);
            let (phys, k) = unpack(&m, &file, 4096).unwrap();
            assert!(matches!(
                k.relocate(&m, phys, 0x20_0000),
                Err(VmlinuxError::RelocationOutside { width: 4, .. })
            ));
            assert_eq!(m.read_obj::<u64>(GuestAddress(PHYS)).unwrap(), V + 0x20);
        }
    }

    #[test]
    fn a_kernel_that_does_not_fit_is_refused() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), PHYS as usize + 100)]).unwrap();
        let file = vmlinux(BASE, BASE + 0x10, &body(), 0x1000, &[]);
        assert!(matches!(
            unpack(&m, &file, 4096),
            Err(VmlinuxError::DoesNotFit { phys: PHYS, .. })
        ));
    }

    proptest::proptest! {
        /// Whatever bytes a kernel file holds, in whatever pieces: an unpacked kernel inside
        /// guest RAM or an error, never a panic; relocating one only writes inside its span.
        #[test]
        fn any_stream_unpacks_or_is_refused(
            head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            flips in proptest::collection::vec((0usize..240, proptest::prelude::any::<u8>()), 0..6),
            piece in 1usize..300,
            phys in proptest::prelude::any::<u64>(),
            offset in proptest::prelude::any::<u64>(),
        ) {
            // Half of the cases start from a valid kernel with some header bytes changed.
            let mut file = if head.len() % 2 == 0 {
                vmlinux(BASE, BASE + 0x10, &body(), 0x100, &tail)
            } else {
                head.clone()
            };
            for (at, v) in flips {
                if let Some(b) = file.get_mut(at) {
                    *b = v;
                }
            }
            let m = mem();
            let mut u = Unpacker::new(&m, file.len() as u64);
            let mut ok = true;
            for c in file.chunks(piece) {
                if u.write(c, &mut |_: &Layout| phys % (64 << 20)).is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                if let Ok((at, k)) = u.finish() {
                    proptest::prop_assert!(at + k.layout.span() <= 64 << 20);
                    let _ = k.relocate(&m, at, offset % (1 << 30));
                }
            }
        }
    }

    #[test]
    fn malformed_files_are_refused() {
        let good = vmlinux(BASE, BASE + 0x10, &body(), 0, &[]);
        let mut not_x86 = good.clone();
        not_x86[18] = 40;
        let mut seg_out = good.clone();
        seg_out[EHDR_SIZE + 32..EHDR_SIZE + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut entry_out = good.clone();
        entry_out[24..32].copy_from_slice(&(BASE + 0x10_0000).to_le_bytes());
        for bad in [not_x86, seg_out, entry_out] {
            assert!(matches!(
                unpack(&mem(), &bad, 4096),
                Err(VmlinuxError::NotElf(_))
            ));
        }
        assert!(matches!(
            unpack(&mem(), &good[..100], 4096),
            Err(VmlinuxError::NotElf(_))
        ));
        let tails: [&[u8]; 3] = [
            &[0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[0, 0, 0, 0, 1, 0, 0, 0],
        ];
        for tail in tails {
            assert!(matches!(
                unpack(&mem(), &vmlinux(BASE, BASE + 0x10, &body(), 0, tail), 4096),
                Err(VmlinuxError::BadRelocations(_))
            ));
        }
    }
}
