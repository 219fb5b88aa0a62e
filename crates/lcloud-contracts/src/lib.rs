//! λCLOUD's contract runtime: user code in WebAssembly, folded as a pure morphism.
//!
//! A contract is a WebAssembly module checked at deploy ([`validate`]: integer WebAssembly
//! only, the host ABI's imports only, bounded size, memory, tables and locals) and rewritten
//! with fuel rule 1 ([`meter`]: one fuel per instruction executed, counted by the module
//! itself), then run by wasmi, pinned to an exact version. A call runs in a fresh instance:
//! nothing survives between calls but the contract's key-value state, which the host hands it
//! ([`abi`]). A call that traps, runs out of fuel or calls `reject` changes nothing and is
//! rejected with a reason that depends only on the contract and the call, so every node records
//! the same rejection.
//!
//! The core knows contracts only by id ([`lcloud_core::Morphism`]); this crate is the side
//! effect of running untrusted code, kept out of the core.

pub mod abi;
pub mod meter;
pub mod validate;

use std::sync::Arc;

use lcloud_core::{CallContext, Effects, Id, Kv, Loader, Program, Registry, Rejection, Value};
use wasmi::{Config, Engine, Linker, Module, Store, StoreLimitsBuilder, Val};

pub use validate::DeployError;

use abi::{Host, Stop};
use meter::{DEPTH_GLOBAL, FUEL_GLOBAL, FUEL_RULE};

/// Fuel of a call whose experience names none.
pub const FUEL_DEFAULT: u64 = 10_000_000;
/// Most fuel one call may be given: a call that loops for ever costs every node this much
/// (about a tenth of a second here, docs/contracts.md), and no more.
pub const FUEL_MAX: u64 = 100_000_000;

/// The engine and the host functions, shared by every contract of a node.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Host>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Runtime {
    /// An engine with wasmi's own fuel off (fuel rule 1 meters inside the module), its call
    /// depth limit far past [`meter::DEPTH_MAX`] so the module's own limit always trips first,
    /// and the ABI linked.
    pub fn new() -> Arc<Runtime> {
        let mut config = Config::default();
        config
            .floats(false)
            .wasm_tail_call(false)
            .wasm_multi_memory(false)
            .wasm_custom_page_sizes(false)
            .wasm_wide_arithmetic(false)
            .set_max_recursion_depth(4 * meter::DEPTH_MAX as usize)
            .compilation_mode(wasmi::CompilationMode::Eager);
        let engine = Engine::new(&config);
        let mut linker = Linker::new(&engine);
        abi::link(&mut linker).expect("the ABI's names are distinct");
        Arc::new(Runtime { engine, linker })
    }
}

/// A deployed contract: its id, and its module checked, metered and compiled.
#[derive(Clone)]
pub struct Contract {
    id: Id,
    module: Module,
    /// Whether the module imports `doc_get`.
    reads_document: bool,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract").field("id", &self.id).finish()
    }
}

/// The morphisms of a node that runs contracts: the built-ins, and deploys loaded by this
/// crate. Every node of a cloud uses this registry, so every node refuses the same deploys.
pub fn registry() -> Registry {
    Registry::builtin().with_loader(Arc::new(WasmLoader {
        runtime: Runtime::new(),
    }))
}

/// The [`Loader`] of WebAssembly contracts.
#[derive(Debug)]
pub struct WasmLoader {
    runtime: Arc<Runtime>,
}

impl Loader for WasmLoader {
    fn load(&self, id: Id, rule: u32, code: &[u8]) -> Result<Arc<dyn Program>, Rejection> {
        if rule != FUEL_RULE {
            return Err(Rejection(format!(
                "deploy refused: fuel rule {rule} is unknown (this version of lcloud meters with rule {FUEL_RULE})"
            )));
        }
        Contract::deploy(&self.runtime, id, code)
            .map(|c| Arc::new(c) as Arc<dyn Program>)
            .map_err(|e| Rejection(format!("deploy refused: {e}")))
    }
}

impl Contract {
    /// Checks, meters and compiles `code` as contract `id`, or says which rule it breaks.
    pub fn deploy(runtime: &Arc<Runtime>, id: Id, code: &[u8]) -> Result<Contract, DeployError> {
        let shape = validate::validate(code)?;
        let metered = meter::instrument(code, &shape)?;
        let module = Module::new(&runtime.engine, &metered[..])
            .map_err(|e| DeployError::Invalid(format!("the metered module: {e}")))?;
        let reads_document = module
            .imports()
            .any(|i| i.module() == abi::MODULE && i.name() == "doc_get");
        Ok(Contract {
            id,
            module,
            reads_document,
            runtime: runtime.clone(),
        })
    }

    /// Runs `function` with `args`; the new state, or why the call is rejected.
    pub fn call(
        &self,
        state: &Kv,
        function: &str,
        args: &Value,
        ctx: &CallContext,
    ) -> Result<Effects, Rejection> {
        if function.starts_with(validate::RESERVED_PREFIX) || function == "memory" {
            return Err(Rejection(format!(
                "{function:?} is not a function of the contract"
            )));
        }
        self.run(state.clone(), function, args, ctx, false)
    }

    /// Whether the contract exports a function `name`.
    pub fn exports(&self, name: &str) -> bool {
        self.module
            .exports()
            .any(|e| e.name() == name && e.ty().func().is_some())
    }

    fn run(
        &self,
        state: Kv,
        function: &str,
        args: &Value,
        ctx: &CallContext,
        in_init: bool,
    ) -> Result<Effects, Rejection> {
        let fuel = ctx.fuel.unwrap_or(FUEL_DEFAULT).min(FUEL_MAX);
        let host = Host {
            args: args.clone(),
            args_json: None,
            state,
            author: ctx.author.0,
            seq: ctx.seq,
            clock: ctx
                .clock
                .iter()
                .flat_map(|(n, s)| n.0.into_iter().chain(s.to_le_bytes()))
                .collect(),
            doc: ctx.doc.clone(),
            guarded: ctx.guarded.clone(),
            in_init,
            guards: Vec::new(),
            writes: Vec::new(),
            written: 0,
            limits: StoreLimitsBuilder::new()
                .memory_size(validate::MEMORY_PAGES_MAX as usize * 65536)
                .table_elements(validate::TABLE_MAX as usize)
                .instances(1)
                .build(),
        };
        let mut store = Store::new(&self.runtime.engine, host);
        store.limiter(|h| &mut h.limits);
        let instance = self
            .runtime
            .linker
            .instantiate_and_start(&mut store, &self.module)
            .map_err(|e| Rejection(format!("cannot start the contract: {}", reason(&e, None))))?;
        let fuel_global = instance
            .get_global(&store, FUEL_GLOBAL)
            .ok_or_else(|| Rejection("the contract has no fuel counter".into()))?;
        let depth_global = instance
            .get_global(&store, DEPTH_GLOBAL)
            .ok_or_else(|| Rejection("the contract has no depth counter".into()))?;
        fuel_global
            .set(&mut store, Val::I64(fuel as i64))
            .map_err(|_| Rejection("the contract's fuel counter is not writable".into()))?;
        let func = instance
            .get_typed_func::<(), ()>(&store, function)
            .map_err(|_| {
                Rejection(format!(
                    "the contract exports no function {function:?} taking and returning nothing"
                ))
            })?;
        match func.call(&mut store, ()) {
            Ok(()) => {
                let host = store.into_data();
                Ok(Effects {
                    state: host.state,
                    writes: host.writes,
                    guards: host.guards,
                })
            }
            Err(e) => {
                let left = match fuel_global.get(&store) {
                    Val::I64(v) => v,
                    _ => 0,
                };
                let depth = match depth_global.get(&store) {
                    Val::I32(v) => v,
                    _ => 0,
                };
                let why = if left < 0 {
                    format!("out of fuel (limit {fuel})")
                } else if depth > meter::DEPTH_MAX {
                    format!("call stack deeper than {} frames", meter::DEPTH_MAX)
                } else {
                    reason(&e, Some(fuel))
                };
                Err(Rejection(why))
            }
        }
    }

    /// The contract's id.
    pub fn contract_id(&self) -> Id {
        self.id
    }
}

/// The rejection for an error of wasmi: only what the contract did, in our words (never the
/// engine's own message, which may change between versions).
fn reason(e: &wasmi::Error, fuel: Option<u64>) -> String {
    if let Some(stop) = e.downcast_ref::<Stop>() {
        return match stop {
            Stop::OutOfFuel => format!("out of fuel (limit {})", fuel.unwrap_or(0)),
            other => other.to_string(),
        };
    }
    use wasmi::TrapCode as T;
    match e.as_trap_code() {
        Some(T::UnreachableCodeReached) => "trap: unreachable".into(),
        Some(T::MemoryOutOfBounds) => "trap: memory access out of bounds".into(),
        Some(T::TableOutOfBounds) => "trap: table access out of bounds".into(),
        Some(T::IndirectCallToNull) => "trap: indirect call to null".into(),
        Some(T::IntegerDivisionByZero) => "trap: integer division by zero".into(),
        Some(T::IntegerOverflow) => "trap: integer overflow".into(),
        Some(T::BadConversionToInteger) => "trap: bad conversion to integer".into(),
        Some(T::BadSignature) => "trap: indirect call with the wrong signature".into(),
        Some(T::StackOverflow) => "trap: stack overflow".into(),
        Some(T::OutOfFuel) => "out of fuel".into(),
        _ => "trap".into(),
    }
}

/// Call arguments for a contract: `{"function": NAME, "args": ARGS}` (`args` may be left out).
pub fn split_args(args: &Value) -> Result<(&str, Value), Rejection> {
    let Value::Map(m) = args else {
        return Err(Rejection(
            "a contract call's arguments are {\"function\": NAME, \"args\": …}".into(),
        ));
    };
    let Some(Value::Str(function)) = m.get("function") else {
        return Err(Rejection(
            "a contract call names its function: {\"function\": NAME, \"args\": …}".into(),
        ));
    };
    Ok((function, m.get("args").cloned().unwrap_or(Value::Null)))
}

impl Program for Contract {
    fn reads_document(&self) -> bool {
        self.reads_document
    }
    fn call(&self, state: &Kv, args: &Value, ctx: &CallContext) -> Result<Effects, Rejection> {
        let (function, args) = split_args(args)?;
        if function == "init" {
            return Err(Rejection(
                "\"init\" runs only when the contract is deployed".into(),
            ));
        }
        Contract::call(self, state, function, &args, ctx)
    }
    fn init(&self, args: &Value, ctx: &CallContext) -> Result<Effects, Rejection> {
        if !self.exports("init") {
            return Ok(Effects::default());
        }
        self.run(Kv::new(), "init", args, ctx, true)
            .map_err(|Rejection(why)| Rejection(format!("init: {why}")))
    }
}
