//! One instance of an interpreter guest: the data module (a memory) and the
//! code linked against it, in one store, and the ABI's calls into it
//! (`portcullis_alloc`, then `portcullis_init` or `portcullis_evaluate`,
//! see the guest crate `portcullis-interpreter-guest`).

use wasmtime::{Extern, Func, Instance, Memory, Module, ModuleExport, Store};

use std::time::Instant;

use super::Sandbox;
use super::split::{MEMORY_EXPORT, MEMORY_IMPORT};
use crate::limits::Limits;
use crate::runtime::{Failure, GuestFault};
use crate::store::{EvaluationState, GuestIo, new_store_with};

/// The reply's first byte when the call succeeded (else it failed).
const OK: u8 = 0;

/// The guest's answer to a call: its result, or its own error (both
/// payloads in the interpreter's format).
pub type Reply = Result<Vec<u8>, Vec<u8>>;

/// The code module compiled, and how its imports are satisfied and its
/// exports found, resolved once.
pub(super) struct Code {
    pub module: Module,
    /// Per import, in order: the data module's memory, or the linker's item.
    imports: Vec<Import>,
    alloc: ModuleExport,
    init: ModuleExport,
    evaluate: ModuleExport,
    /// Runs the guest's constructors (a reactor's `_initialize`): before
    /// `init`, never again (the snapshot holds their work).
    initialize: Option<ModuleExport>,
}

enum Import {
    Memory,
    Linked { module: String, name: String },
}

/// Which call of the ABI.
#[derive(Debug, Clone, Copy)]
pub(super) enum Entry {
    Init,
    Evaluate,
}

impl Code {
    /// Resolves `module`'s imports against `engine`'s module linker
    /// (everything but the memory must be there: WASI preview 1) and finds
    /// the ABI's exports.
    pub(super) fn new(engine: &Sandbox, module: Module) -> Result<Self, String> {
        // Linker items exist per store: this one only checks they are there.
        let mut scratch = new_store_with(
            &engine.engine,
            &Limits::default(),
            Instant::now(),
            GuestIo::Log,
            |_| {},
        );
        let mut imports = Vec::new();
        for import in module.imports() {
            if (import.module(), import.name()) == MEMORY_IMPORT {
                imports.push(Import::Memory);
                continue;
            }
            engine
                .linker
                .get_by_import(&mut scratch, &import)
                .ok_or_else(|| {
                    format!(
                        "it imports `{}::{}`, which the host does not provide",
                        import.module(),
                        import.name()
                    )
                })?;
            imports.push(Import::Linked {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
        let export = |name: &str| {
            module
                .get_export_index(name)
                .ok_or_else(|| format!("it exports no `{name}`"))
        };
        Ok(Self {
            alloc: export("portcullis_alloc")?,
            init: export("portcullis_init")?,
            evaluate: export("portcullis_evaluate")?,
            initialize: module.get_export_index("_initialize"),
            imports,
            module,
        })
    }

    /// A fresh instance in `store`: `data` (a data module, whose memory
    /// comes mapped from its image) and the code linked to its memory.
    pub(super) async fn instantiate(
        &self,
        store: &mut Store<EvaluationState>,
        linker: &wasmtime::Linker<EvaluationState>,
        data: &Module,
    ) -> wasmtime::Result<Guest> {
        let data = Instance::new_async(&mut *store, data, &[]).await?;
        let memory = data
            .get_memory(&mut *store, MEMORY_EXPORT)
            .ok_or_else(|| wasmtime::format_err!("the data module exports no `{MEMORY_EXPORT}`"))?;
        let mut imports = Vec::with_capacity(self.imports.len());
        for import in &self.imports {
            imports.push(match import {
                Import::Memory => Extern::Memory(memory),
                Import::Linked { module, name } => linker.get(&mut *store, module, name)?,
            });
        }
        let instance = Instance::new_async(&mut *store, &self.module, &imports).await?;
        Ok(Guest { instance, memory })
    }
}

/// A live instance of the guest.
pub(super) struct Guest {
    pub instance: Instance,
    pub memory: Memory,
}

impl Guest {
    /// Runs the guest's constructors, if it has any (before `init` only).
    pub(super) async fn initialize(
        &self,
        store: &mut Store<EvaluationState>,
        code: &Code,
    ) -> Result<(), Failure> {
        let Some(initialize) = &code.initialize else {
            return Ok(());
        };
        let initialize = self
            .func(store, initialize)
            .typed::<(), ()>(&*store)
            .map_err(Failure::Call)?;
        initialize
            .call_async(&mut *store, ())
            .await
            .map_err(Failure::Call)
    }

    /// Calls `entry` with `request` and reads its reply, which may be at
    /// most `reply_limit` bytes.
    pub(super) async fn call(
        &self,
        store: &mut Store<EvaluationState>,
        code: &Code,
        entry: Entry,
        request: &[u8],
        reply_limit: usize,
    ) -> Result<Reply, Failure> {
        let len = u32::try_from(request.len())
            .map_err(|_| Failure::Protocol("the request is over 4 GiB".into()))?;
        let alloc = self
            .func(store, &code.alloc)
            .typed::<u32, u32>(&*store)
            .map_err(Failure::Call)?;
        let ptr = alloc
            .call_async(&mut *store, len)
            .await
            .map_err(Failure::Call)?;
        self.memory
            .write(&mut *store, ptr as usize, request)
            .map_err(|_| protocol("portcullis_alloc gave a buffer outside the memory"))?;
        let export = match entry {
            Entry::Init => &code.init,
            Entry::Evaluate => &code.evaluate,
        };
        let call = self
            .func(store, export)
            .typed::<(u32, u32), u64>(&*store)
            .map_err(Failure::Call)?;
        let packed = call
            .call_async(&mut *store, (ptr, len))
            .await
            .map_err(Failure::Call)?;
        let (ptr, len) = (packed as u32 as usize, (packed >> 32) as usize);
        let size = len.saturating_sub(1);
        if size > reply_limit {
            return Err(Failure::Fault(GuestFault::TooLarge {
                size,
                limit: reply_limit,
            }));
        }
        let reply = self
            .memory
            .data(&*store)
            .get(ptr..ptr + len)
            .ok_or_else(|| protocol("the reply lies outside the memory"))?;
        match reply.split_first() {
            Some((&OK, payload)) => Ok(Ok(payload.to_vec())),
            Some((_, payload)) => Ok(Err(payload.to_vec())),
            None => Err(protocol("the reply is empty")),
        }
    }

    fn func(&self, store: &mut Store<EvaluationState>, export: &ModuleExport) -> Func {
        self.instance
            .get_module_export(&mut *store, export)
            .and_then(Extern::into_func)
            .expect("the export was found in the module")
    }
}

fn protocol(message: &str) -> Failure {
    Failure::Protocol(format!("interpreter guest: {message}"))
}
