//! `portcullis annotate`: Kubewarden's `metadata.yml` written into a core
//! module as its `io.kubewarden.metadata` custom section, as `kwctl
//! annotate` does.
//!
//! The module's sections are copied byte for byte (any earlier metadata
//! section dropped) and the new section appended, with wasm-encoder.

use wasm_encoder::{CustomSection, RawSection};
use wasmparser::{Parser, Payload};

use super::metadata::{ExecutionMode, Metadata, MetadataError, SECTION};

/// Why a module cannot be annotated.
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    /// The metadata.yml is unusable.
    #[error("metadata: {0}")]
    Metadata(#[from] MetadataError),
    /// The module is not a core module of the kind the metadata says.
    #[error("module: {0}")]
    Module(String),
}

/// Parses a Kubewarden `metadata.yml` (YAML, Kubewarden's keys) and checks it.
pub fn parse_metadata_yml(text: &str) -> Result<Metadata, MetadataError> {
    let metadata: Metadata =
        serde_saphyr::from_str(text).map_err(|e| MetadataError::Malformed(e.to_string()))?;
    metadata.validate()?;
    Ok(metadata)
}

/// The core module `module` with `metadata` (from a metadata.yml) as its
/// Kubewarden metadata. As `kwctl annotate` does, the protocol version is
/// filled in when the metadata does not give it (`v1` for waPC modules,
/// `Unknown` for the others) and the module's exports are checked against
/// the execution mode.
pub fn annotate(module: &[u8], mut metadata: Metadata) -> Result<Vec<u8>, AnnotateError> {
    if !super::super::is_core_module(module) {
        return Err(AnnotateError::Module(
            "not a core WebAssembly module (Kubewarden metadata goes into core modules; a \
             component carries its metadata in its `metadata` export)"
                .into(),
        ));
    }
    let exports = exports(module)?;
    let exports_any = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
    let mode = metadata.execution_mode;
    match mode {
        ExecutionMode::Opa | ExecutionMode::Gatekeeper if !exports_any("opa_") => {
            return Err(AnnotateError::Module(format!(
                "executionMode `{}` is for Rego (OPA) modules, and this one exports no `opa_*` \
                 function",
                mode.as_str()
            )));
        }
        ExecutionMode::Wapc | ExecutionMode::Wasi if exports_any("opa_") => {
            return Err(AnnotateError::Module(format!(
                "a Rego (OPA) module cannot have executionMode `{}`: use `opa` or `gatekeeper`",
                mode.as_str()
            )));
        }
        ExecutionMode::Wapc if !exports.iter().any(|e| e == "__guest_call") => {
            return Err(AnnotateError::Module(
                "executionMode `kubewarden-wapc` needs a waPC guest, and this module exports no \
                 `__guest_call` (a WASI command is `executionMode: wasi`)"
                    .into(),
            ));
        }
        ExecutionMode::Wasi if !exports.iter().any(|e| e == "_start") => {
            return Err(AnnotateError::Module(
                "executionMode `wasi` needs a WASI command, and this module exports no `_start`"
                    .into(),
            ));
        }
        _ => {}
    }
    if metadata.protocol_version.is_none() {
        metadata.protocol_version = Some(match mode {
            ExecutionMode::Wapc => "v1".to_owned(),
            _ => "Unknown".to_owned(),
        });
    }
    with_metadata(module, &metadata)
}

/// The core module `module` with `metadata` as its only
/// `io.kubewarden.metadata` section, unchecked (tests use it to write
/// modules Kubewarden's tools would refuse).
pub fn with_metadata(module: &[u8], metadata: &Metadata) -> Result<Vec<u8>, AnnotateError> {
    let json = serde_json::to_vec(metadata).expect("metadata serializes");
    with_section(module, &json)
}

/// The core module `module` with `data` as its only `io.kubewarden.metadata`
/// section, whatever `data` is.
pub fn with_section(module: &[u8], data: &[u8]) -> Result<Vec<u8>, AnnotateError> {
    let mut out = wasm_encoder::Module::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| AnnotateError::Module(e.to_string()))?;
        if let Payload::CustomSection(section) = &payload
            && section.name() == SECTION
        {
            continue;
        }
        // Function bodies come one by one; their section is copied whole
        // when it starts.
        if let Payload::CodeSectionEntry(_) = payload {
            continue;
        }
        if let Some((id, range)) = payload.as_section() {
            out.section(&RawSection {
                id,
                data: &module[range],
            });
        }
    }
    out.section(&CustomSection {
        name: SECTION.into(),
        data: data.into(),
    });
    Ok(out.finish())
}

/// The names of the module's exports.
fn exports(module: &[u8]) -> Result<Vec<String>, AnnotateError> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ExportSection(section) =
            payload.map_err(|e| AnnotateError::Module(e.to_string()))?
        {
            for export in section {
                names.push(
                    export
                        .map_err(|e| AnnotateError::Module(e.to_string()))?
                        .name
                        .to_owned(),
                );
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA_YML: &str = "\
rules:
  - apiGroups: [\"\"]
    apiVersions: [v1]
    resources: [pods]
    operations: [CREATE, UPDATE]
mutating: false
contextAware: false
annotations:
  io.kubewarden.policy.title: test
";

    /// `(module (memory (export "memory") 1) (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))`
    fn wapc_module() -> Vec<u8> {
        let mut module = wasm_encoder::Module::new();
        let mut types = wasm_encoder::TypeSection::new();
        types.ty().function(
            [wasm_encoder::ValType::I32; 2],
            [wasm_encoder::ValType::I32],
        );
        module.section(&types);
        let mut functions = wasm_encoder::FunctionSection::new();
        functions.function(0);
        module.section(&functions);
        let mut memories = wasm_encoder::MemorySection::new();
        memories.memory(wasm_encoder::MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        let mut exports = wasm_encoder::ExportSection::new();
        exports.export("memory", wasm_encoder::ExportKind::Memory, 0);
        exports.export("__guest_call", wasm_encoder::ExportKind::Func, 0);
        module.section(&exports);
        let mut code = wasm_encoder::CodeSection::new();
        let mut body = wasm_encoder::Function::new([]);
        body.instructions().i32_const(1).end();
        code.function(&body);
        module.section(&code);
        module.finish()
    }

    #[test]
    fn annotating_twice_keeps_one_section_and_the_code() {
        let module = wapc_module();
        let metadata = parse_metadata_yml(METADATA_YML).unwrap();
        let once = annotate(&module, metadata.clone()).unwrap();
        let read = Metadata::from_module(&once).unwrap();
        assert_eq!(read.protocol_version.as_deref(), Some("v1"));
        assert_eq!(read.rules[0].resources, ["pods"]);
        let twice = annotate(&once, metadata).unwrap();
        assert_eq!(once, twice);
        wasmparser::Validator::new().validate_all(&twice).unwrap();
        assert_eq!(exports(&twice).unwrap(), ["memory", "__guest_call"]);
    }

    #[test]
    fn the_mode_must_match_the_module() {
        let module = wapc_module();
        let wasi = parse_metadata_yml(&format!("{METADATA_YML}executionMode: wasi\n")).unwrap();
        let error = annotate(&module, wasi).unwrap_err().to_string();
        assert!(error.contains("exports no `_start`"), "{error}");
        let opa = parse_metadata_yml(&format!("{METADATA_YML}executionMode: opa\n")).unwrap();
        assert!(
            annotate(&module, opa)
                .unwrap_err()
                .to_string()
                .contains("Rego")
        );
        let error = annotate(
            b"\0asm\x0d\0\x01\0",
            parse_metadata_yml(METADATA_YML).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("not a core WebAssembly module"), "{error}");
    }

    #[test]
    fn a_bad_metadata_yml_is_refused() {
        let error = parse_metadata_yml("rules: 3").unwrap_err().to_string();
        assert!(
            error.starts_with("malformed Kubewarden metadata"),
            "{error}"
        );
        let error = parse_metadata_yml("executionMode: rust")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("malformed Kubewarden metadata"),
            "{error}"
        );
    }
}
