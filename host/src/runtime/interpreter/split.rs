//! The guest split in two, once per process: its *code* (every section but
//! its memory and data, and the memory imported instead of defined) and its
//! *initial memory* (the memory's type and its data segments), from which
//! the first instance, the one `init` runs in, starts.
//!
//! Nothing else changes: no index shifts (the imported memory takes the
//! defined one's index 0), so every other section is copied byte for byte.
//! The code's mutable globals are exported (under [`GLOBAL_EXPORT`]) so the
//! snapshot can check that `init` left them as they started: they stay the
//! code's own, initialised by every instance (a Rust guest's only one is
//! `__stack_pointer`, back at its start when `init` returns).

use std::ops::Range;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{ExportKind, ExportSection, ImportSection, RawSection};
use wasmparser::{ConstExpr, DataKind, Operator, Parser, Payload, TypeRef, ValType};

/// The module and name the code imports its memory as; the data module of
/// a snapshot exports it as [`MEMORY_EXPORT`].
pub(super) const MEMORY_IMPORT: (&str, &str) = ("portcullis:snapshot", "memory");
/// The name of the memory a data module exports.
pub(super) const MEMORY_EXPORT: &str = "memory";
/// The prefix of the code's exports of its mutable globals (the global's
/// index follows).
pub(super) const GLOBAL_EXPORT: &str = "portcullis:global:";

/// Why a guest cannot be split.
#[derive(Debug, thiserror::Error)]
#[error("the interpreter guest cannot be snapshotted: {0}")]
pub struct SplitError(String);

fn refuse(message: impl Into<String>) -> SplitError {
    SplitError(message.into())
}

/// A guest split in two.
#[derive(Debug)]
pub(super) struct Split {
    /// The code module's wasm.
    pub code: Vec<u8>,
    /// The initial memory: the guest's own memory and data segments.
    pub initial: MemoryImage,
    /// The mutable globals, with the value each starts with.
    pub globals: Vec<MutableGlobal>,
    /// The shadow stack's region when it lies below every data segment
    /// (`--stack-first`, Rust's layout for wasm): from 0 to where
    /// `__stack_pointer` (global 0) starts. Whatever `init` left there is
    /// dead once it returned, so a snapshot does not keep it.
    pub stack: Option<Range<usize>>,
}

/// A memory's type and contents: what a data module defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MemoryImage {
    /// Its size, in 64 KiB pages.
    pub pages: u64,
    /// Its maximum, in pages, if any.
    pub maximum: Option<u64>,
    /// Its non-zero contents: (offset, bytes), in ascending order.
    pub segments: Vec<(u32, Vec<u8>)>,
}

/// A mutable global of the code and its starting value (as raw bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MutableGlobal {
    /// Its index.
    pub index: u32,
    /// Its value when an instance starts.
    pub initial: u64,
}

/// Splits `guest`, a core module defining one memory.
pub(super) fn split(guest: &[u8]) -> Result<Split, SplitError> {
    // The memory section comes after the imports, which must import it
    // now: one pass to find it first.
    let memory = find_memory(guest)?;
    let mut reencoder = RoundtripReencoder;
    let memory_import = reencoder
        .memory_type(memory)
        .map_err(|e| refuse(e.to_string()))?;
    let mut code = wasm_encoder::Module::new();
    let mut imports_written = false;
    let mut segments = Vec::new();
    let mut globals = Vec::new();
    let mut imported_globals = 0u32;
    let mut stack_pointer = None;
    for payload in Parser::new(0).parse_all(guest) {
        let payload = payload.map_err(|e| refuse(e.to_string()))?;
        let raw = payload.as_section();
        // Where the import section would be, when the guest has none.
        if !imports_written && raw.as_ref().is_some_and(|(id, _)| *id > 2) {
            let mut imports = ImportSection::new();
            imports.import(MEMORY_IMPORT.0, MEMORY_IMPORT.1, memory_import);
            code.section(&imports);
            imports_written = true;
        }
        match payload {
            Payload::ImportSection(section) => {
                for import in section.clone().into_imports() {
                    let import = import.map_err(|e| refuse(e.to_string()))?;
                    if let TypeRef::Global(_) = import.ty {
                        imported_globals += 1;
                    }
                }
                let mut imports = ImportSection::new();
                reencoder
                    .parse_import_section(&mut imports, section)
                    .map_err(|e| refuse(e.to_string()))?;
                imports.import(MEMORY_IMPORT.0, MEMORY_IMPORT.1, memory_import);
                code.section(&imports);
                imports_written = true;
            }
            // Now imported (and checked by `find_memory`).
            Payload::MemorySection(_) | Payload::DataCountSection { .. } => {}
            Payload::GlobalSection(section) => {
                for (index, global) in (imported_globals..).zip(section) {
                    let global = global.map_err(|e| refuse(e.to_string()))?;
                    if !global.ty.mutable {
                        continue;
                    }
                    let initial = const_value(&global.init_expr).ok_or_else(|| {
                        refuse(format!("mutable global {index} starts from an expression"))
                    })?;
                    // LLVM's convention: global 0, an i32, is the stack pointer.
                    if index == 0 && global.ty.content_type == ValType::I32 {
                        stack_pointer = Some(initial as u32 as usize);
                    }
                    globals.push(MutableGlobal { index, initial });
                }
                copy(&mut code, guest, raw);
            }
            // Kept as they are (the memory's now the imported one, which
            // WASI's functions find under the guest's `memory` export).
            Payload::ExportSection(section) => {
                let mut exports = ExportSection::new();
                reencoder
                    .parse_export_section(&mut exports, section)
                    .map_err(|e| refuse(e.to_string()))?;
                for global in &globals {
                    let name = format!("{GLOBAL_EXPORT}{}", global.index);
                    exports.export(&name, ExportKind::Global, global.index);
                }
                code.section(&exports);
            }
            Payload::StartSection { .. } => {
                return Err(refuse(
                    "it has a start function, which would run again in every instance",
                ));
            }
            Payload::DataSection(section) => {
                for data in section {
                    let data = data.map_err(|e| refuse(e.to_string()))?;
                    let DataKind::Active {
                        memory_index: 0,
                        offset_expr,
                    } = data.kind
                    else {
                        return Err(refuse("it has a passive data segment"));
                    };
                    let offset = const_value(&offset_expr)
                        .ok_or_else(|| refuse("a data segment's offset is not a constant"))?;
                    segments.push((offset as u32, data.data.to_vec()));
                }
            }
            // Copied whole with its section.
            Payload::CodeSectionEntry(_) => {}
            _ => copy(&mut code, guest, raw),
        }
    }
    segments.sort_by_key(|(offset, _)| *offset);
    let first_data = segments
        .first()
        .map_or(usize::MAX, |(offset, _)| *offset as usize);
    let stack = stack_pointer
        .filter(|&top| top <= first_data)
        .map(|top| 0..top);
    Ok(Split {
        code: code.finish(),
        initial: MemoryImage {
            pages: memory.initial,
            maximum: memory.maximum,
            segments,
        },
        globals,
        stack,
    })
}

/// The guest's one memory, which it must define: 32-bit, not shared.
fn find_memory(guest: &[u8]) -> Result<wasmparser::MemoryType, SplitError> {
    let mut found = None;
    for payload in Parser::new(0).parse_all(guest) {
        match payload.map_err(|e| refuse(e.to_string()))? {
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.map_err(|e| refuse(e.to_string()))?;
                    if let TypeRef::Memory(_) = import.ty {
                        return Err(refuse(format!(
                            "it imports a memory ({}::{})",
                            import.module, import.name
                        )));
                    }
                }
            }
            Payload::MemorySection(section) => {
                for memory in section {
                    let memory = memory.map_err(|e| refuse(e.to_string()))?;
                    if found.replace(memory).is_some() {
                        return Err(refuse("it defines more than one memory"));
                    }
                }
            }
            _ => {}
        }
    }
    match found {
        None => Err(refuse("it defines no memory")),
        Some(memory) if memory.memory64 || memory.shared => {
            Err(refuse("its memory is 64-bit or shared"))
        }
        Some(memory) => Ok(memory),
    }
}

/// The value of a constant expression made of one `*.const`, as raw bits.
fn const_value(expr: &ConstExpr<'_>) -> Option<u64> {
    let mut operators = expr.get_operators_reader();
    let value = match operators.read().ok()? {
        Operator::I32Const { value } => value as u32 as u64,
        Operator::I64Const { value } => value as u64,
        Operator::F32Const { value } => u64::from(value.bits()),
        Operator::F64Const { value } => value.bits(),
        _ => return None,
    };
    matches!(operators.read().ok()?, Operator::End).then_some(value)
}

/// Copies a section byte for byte (`raw`: its id and range, if the payload
/// is a section).
fn copy(code: &mut wasm_encoder::Module, guest: &[u8], raw: Option<(u8, Range<usize>)>) {
    if let Some((id, range)) = raw {
        code.section(&RawSection {
            id,
            data: &guest[range],
        });
    }
}
