//! Memory images: what a linear memory holds, as the *data module* that
//! defines it — a module with one exported memory and one active data
//! segment per run of non-zero pages, nothing else.
//!
//! Segments are whole 4 KiB pages at constant offsets within the memory's
//! initial size, so wasmtime turns them into one static image
//! (`memory_init_cow`) that every instance maps copy-on-write instead of
//! copying: instantiating costs the same whatever the snapshot's size.

use std::ops::Range;

use wasm_encoder::{ConstExpr, DataSection, ExportKind, ExportSection, MemorySection, MemoryType};

use super::split::{MEMORY_EXPORT, MemoryImage};

/// The granularity of a snapshot: the host's page, and what wasmtime maps.
const PAGE: usize = 4096;
/// A wasm page.
pub(super) const WASM_PAGE: usize = 64 << 10;

/// The image of `memory` (a whole linear memory, `maximum` its type's
/// maximum in wasm pages): its non-zero 4 KiB pages, leaving out `dead` (a
/// region whose contents no longer matter, e.g. the stack below where its
/// pointer rests).
pub(super) fn capture(
    memory: &[u8],
    maximum: Option<u64>,
    dead: Option<Range<usize>>,
) -> MemoryImage {
    let dead = dead.unwrap_or(0..0);
    let mut segments: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut run: Option<Range<usize>> = None;
    for (index, page) in memory.chunks(PAGE).enumerate() {
        let at = index * PAGE;
        let in_dead = dead.start <= at && at + page.len() <= dead.end;
        let live = !in_dead && !is_zero(page);
        match (&mut run, live) {
            (Some(range), true) => range.end = at + page.len(),
            (None, true) => run = Some(at..at + page.len()),
            (Some(_), false) => {
                let range = run.take().expect("a run");
                segments.push((range.start as u32, memory[range].to_vec()));
            }
            (None, false) => {}
        }
    }
    if let Some(range) = run {
        segments.push((range.start as u32, memory[range].to_vec()));
    }
    MemoryImage {
        pages: (memory.len() / WASM_PAGE) as u64,
        maximum,
        segments,
    }
}

fn is_zero(bytes: &[u8]) -> bool {
    let (words, rest) = bytes.as_chunks::<8>();
    words.iter().all(|word| u64::from_ne_bytes(*word) == 0) && rest.iter().all(|&b| b == 0)
}

/// The wasm of the data module defining `image` (exported as
/// [`MEMORY_EXPORT`]).
pub(super) fn data_module(image: &MemoryImage) -> Vec<u8> {
    let mut module = wasm_encoder::Module::new();
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: image.pages,
        maximum: image.maximum,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    module.section(&memories);
    let mut exports = ExportSection::new();
    exports.export(MEMORY_EXPORT, ExportKind::Memory, 0);
    module.section(&exports);
    let mut data = DataSection::new();
    for (offset, bytes) in &image.segments {
        data.active(
            0,
            &ConstExpr::i32_const(*offset as i32),
            bytes.iter().copied(),
        );
    }
    module.section(&data);
    module.finish()
}

/// How many bytes of memory an image holds (its segments' total).
pub(super) fn image_bytes(image: &MemoryImage) -> usize {
    image.segments.iter().map(|(_, bytes)| bytes.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_zero_pages_outside_the_dead_region_are_kept() {
        let mut memory = vec![0u8; 2 * WASM_PAGE];
        memory[10] = 1; // page 0: dead (the stack)
        memory[5 * PAGE + 7] = 2; // pages 5 and 6: one run
        memory[6 * PAGE] = 3;
        memory[2 * WASM_PAGE - 1] = 4; // the last page
        let image = capture(&memory, Some(9), Some(0..4 * PAGE));
        assert_eq!(image.pages, 2);
        assert_eq!(image.maximum, Some(9));
        let runs: Vec<(u32, usize)> = image
            .segments
            .iter()
            .map(|(offset, bytes)| (*offset, bytes.len()))
            .collect();
        assert_eq!(
            runs,
            [
                (5 * PAGE as u32, 2 * PAGE),
                ((2 * WASM_PAGE - PAGE) as u32, PAGE)
            ]
        );
        assert_eq!(image.segments[0].1[7], 2);
        assert_eq!(image_bytes(&image), 3 * PAGE);
        let everything = capture(&memory, None, None);
        assert_eq!(everything.segments[0], (0, memory[..PAGE].to_vec()));
    }

    #[test]
    fn a_data_module_defines_exports_and_fills_its_memory() {
        let mut memory = vec![0u8; WASM_PAGE];
        memory[PAGE + 1] = 42;
        let image = capture(&memory, None, None);
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, data_module(&image)).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let exported = instance.get_memory(&mut store, MEMORY_EXPORT).unwrap();
        assert_eq!(exported.data(&store), &memory[..]);
    }
}
