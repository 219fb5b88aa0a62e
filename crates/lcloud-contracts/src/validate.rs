//! What a contract may be: checked once, at deploy, the same way on every node (the checks are
//! pure functions of the module's bytes). A refused deploy names the rule the module broke.

use wasmparser::{
    ExternalKind, FuncType, Operator, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures,
};

use crate::abi;

/// Largest module accepted, in bytes.
pub const CODE_BYTES_MAX: usize = 512 * 1024;
/// Most functions a module may define or import.
pub const FUNCTIONS_MAX: u32 = 4096;
/// Most locals (parameters included) in one function.
pub const LOCALS_MAX: u32 = 1024;
/// Most globals a module may define.
pub const GLOBALS_MAX: u32 = 256;
/// Most entries of the module's one table.
pub const TABLE_MAX: u64 = 4096;
/// Most 64 KiB pages the module's memory may start with or grow to (4 MiB).
pub const MEMORY_PAGES_MAX: u64 = 64;
/// Names the instrumentation adds; a module may not export them itself.
pub const RESERVED_PREFIX: &str = "__lcloud";

/// Why a module cannot be deployed. Every node refuses it for the same reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    /// Past [`CODE_BYTES_MAX`].
    #[error("the module is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid WebAssembly under the features contracts may use (floats, SIMD, threads,
    /// tail calls, exceptions, several memories and 64-bit memories are refused here).
    #[error("not a module contracts may use: {0}")]
    Invalid(String),
    /// An import the host ABI does not provide, or provides with another signature.
    #[error("import {module}.{name}: {why}")]
    Import {
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A limit on the module's shape.
    #[error("{what}: {found}, at most {max}")]
    Limit {
        /// What is counted.
        what: &'static str,
        /// How many the module has.
        found: u64,
        /// The limit.
        max: u64,
    },
    /// An instruction contracts may not use.
    #[error("function {func} uses {op}, which contracts may not use ({why})")]
    Instruction {
        /// The function's index.
        func: u32,
        /// The instruction.
        op: &'static str,
        /// Why.
        why: &'static str,
    },
    /// An export under the reserved prefix, or a missing `memory` export.
    #[error("{0}")]
    Export(String),
}

/// The features contracts may use: integer WebAssembly with multi-value, sign extension,
/// bulk memory (charged per byte) and reference types (what Rust emits for
/// `wasm32-unknown-unknown`). Floats are refused (NaN bits differ between CPUs), as are SIMD,
/// threads, tail calls, exceptions, GC, several memories and 64-bit memories.
fn features() -> WasmFeatures {
    WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::GC_TYPES
}

/// What validation learned that instrumentation needs.
#[derive(Debug, Default)]
pub(crate) struct Shape {
    /// Parameter counts of each type, by type index.
    pub type_params: Vec<u32>,
    /// Type index of each defined function, in order.
    pub func_types: Vec<u32>,
    /// Imported functions (they come first in the function index space).
    pub imported_funcs: u32,
    /// Globals defined or imported (the instrumentation's come after).
    pub globals: u32,
}

fn limit(what: &'static str, found: u64, max: u64) -> Result<(), DeployError> {
    if found > max {
        return Err(DeployError::Limit { what, found, max });
    }
    Ok(())
}

fn invalid(e: wasmparser::BinaryReaderError) -> DeployError {
    DeployError::Invalid(e.to_string())
}

/// Checks `code` against every rule for contracts.
pub(crate) fn validate(code: &[u8]) -> Result<Shape, DeployError> {
    if code.len() > CODE_BYTES_MAX {
        return Err(DeployError::TooLarge {
            bytes: code.len(),
            max: CODE_BYTES_MAX,
        });
    }
    Validator::new_with_features(features())
        .validate_all(code)
        .map_err(invalid)?;
    let mut shape = Shape::default();
    let mut types: Vec<FuncType> = Vec::new();
    let mut memories = 0u32;
    let mut exports_memory = false;
    let mut func = 0u32;
    for payload in Parser::new(0).parse_all(code) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(r) => {
                for ty in r.into_iter_err_on_gc_types() {
                    let ty = ty.map_err(invalid)?;
                    shape.type_params.push(ty.params().len() as u32);
                    types.push(ty);
                }
            }
            Payload::ImportSection(r) => {
                for import in r {
                    let import = import.map_err(invalid)?;
                    let TypeRef::Func(t) = import.ty else {
                        return Err(DeployError::Import {
                            module: import.module.into(),
                            name: import.name.into(),
                            why: "only functions of the host ABI may be imported".into(),
                        });
                    };
                    check_import(import.module, import.name, &types[t as usize])?;
                    shape.imported_funcs += 1;
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    shape.func_types.push(t.map_err(invalid)?);
                }
                limit(
                    "functions",
                    u64::from(shape.imported_funcs) + shape.func_types.len() as u64,
                    u64::from(FUNCTIONS_MAX),
                )?;
            }
            Payload::TableSection(r) => {
                for table in r {
                    let table = table.map_err(invalid)?;
                    limit("table entries", table.ty.initial, TABLE_MAX)?;
                    limit(
                        "table entries (maximum)",
                        table.ty.maximum.unwrap_or(0),
                        TABLE_MAX,
                    )?;
                }
            }
            Payload::MemorySection(r) => {
                for memory in r {
                    let memory = memory.map_err(invalid)?;
                    memories += 1;
                    limit("memory pages", memory.initial, MEMORY_PAGES_MAX)?;
                }
            }
            Payload::GlobalSection(r) => {
                shape.globals += r.count();
                limit("globals", u64::from(shape.globals), u64::from(GLOBALS_MAX))?;
            }
            Payload::ExportSection(r) => {
                for export in r {
                    let export = export.map_err(invalid)?;
                    if export.name.starts_with(RESERVED_PREFIX) {
                        return Err(DeployError::Export(format!(
                            "export {:?}: names starting with {RESERVED_PREFIX:?} are the runtime's",
                            export.name
                        )));
                    }
                    if export.name == "memory" && export.kind == ExternalKind::Memory {
                        exports_memory = true;
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let index = shape.imported_funcs + func;
                let params = shape.type_params[shape.func_types[func as usize] as usize];
                let mut locals = u64::from(params);
                for l in body.get_locals_reader().map_err(invalid)? {
                    locals += u64::from(l.map_err(invalid)?.0);
                }
                limit("locals in one function", locals, u64::from(LOCALS_MAX))?;
                let mut ops = body.get_operators_reader().map_err(invalid)?;
                while !ops.eof() {
                    check_op(index, &ops.read().map_err(invalid)?)?;
                }
                func += 1;
            }
            _ => {}
        }
    }
    if memories == 0 || !exports_memory {
        return Err(DeployError::Export(
            "a contract must define one memory and export it as \"memory\"".into(),
        ));
    }
    Ok(shape)
}

fn check_import(module: &str, name: &str, ty: &FuncType) -> Result<(), DeployError> {
    let err = |why: String| DeployError::Import {
        module: module.into(),
        name: name.into(),
        why,
    };
    if module != abi::MODULE {
        return Err(err(format!(
            "contracts may import only from {:?} (the host ABI)",
            abi::MODULE
        )));
    }
    let Some((params, results)) = abi::signature(name) else {
        return Err(err("the host ABI has no such function".into()));
    };
    let same = |want: &[abi::Ty], got: &[ValType]| {
        want.len() == got.len()
            && want.iter().zip(got).all(|(w, g)| {
                matches!(
                    (w, g),
                    (abi::Ty::I32, ValType::I32) | (abi::Ty::I64, ValType::I64)
                )
            })
    };
    if !same(params, ty.params()) || !same(results, ty.results()) {
        return Err(err(format!(
            "its type is {ty:?}; the host ABI's is {}",
            abi::describe(params, results)
        )));
    }
    Ok(())
}

/// Instructions the fuel rule cannot charge for by their operands, refused outright.
fn check_op(func: u32, op: &Operator<'_>) -> Result<(), DeployError> {
    let refuse = |op: &'static str| {
        Err(DeployError::Instruction {
            func,
            op,
            why: "its cost depends on operands the fuel rule does not charge",
        })
    };
    match op {
        Operator::MemoryInit { .. } => refuse("memory.init"),
        Operator::TableInit { .. } => refuse("table.init"),
        Operator::TableCopy { .. } => refuse("table.copy"),
        Operator::TableFill { .. } => refuse("table.fill"),
        Operator::TableGrow { .. } => refuse("table.grow"),
        _ => Ok(()),
    }
}
