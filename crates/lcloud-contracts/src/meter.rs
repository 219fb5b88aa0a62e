//! Fuel rule 1: metering written into the module at deploy, so what a call costs depends on the
//! contract's WebAssembly alone, never on the engine that runs it.
//!
//! - Every WebAssembly instruction of the deployed module costs 1 fuel. A function's body is cut
//!   into straight-line runs (a run ends after `block`, `loop`, `if`, `else`, `end`, a branch,
//!   `return`, `unreachable` or a call); each run starts by charging its length, so the fuel
//!   charged is exactly the number of instructions executed, charged before they run.
//! - `memory.fill` and `memory.copy` cost 1 more per 8 bytes (rounded down), `memory.grow` 1 024
//!   more per page asked for, charged from their operand before they run.
//! - A call (direct, indirect or to the host) deeper than [`DEPTH_MAX`] frames traps.
//!
//! The counters are two globals the rewriting adds after the module's own, exported as
//! `__lcloud_fuel` (i64, fuel left; a run that takes it below zero traps before it starts)
//! and `__lcloud_depth` (i32). A trap with the fuel below zero is "out of fuel"; with the
//! depth past the limit, "too deep". Inside a function the fuel lives in a local of its own
//! (cheaper to update than a global in any engine), written back to the global before every
//! call (the host charges from it), every exit from the function and every trap it raises,
//! and read again after every call: where it lives changes no count.

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, ExportKind, ExportSection, Function, GlobalSection,
    GlobalType, Instruction, Module, SectionId, ValType,
};
use wasmparser::{FunctionBody, Operator, Parser};

use crate::validate::{DeployError, Shape};

/// The fuel rule's version, recorded with every deployed contract.
pub const FUEL_RULE: u32 = 1;
/// Deepest call stack a contract may build (frames, host calls included).
pub const DEPTH_MAX: i32 = 256;
/// Fuel per 8 bytes filled or copied.
pub const BULK_SHIFT: i64 = 3;
/// Fuel per page `memory.grow` asks for.
pub const GROW_PAGE_COST: i64 = 1024;
/// The exported fuel counter.
pub const FUEL_GLOBAL: &str = "__lcloud_fuel";
/// The exported depth counter.
pub const DEPTH_GLOBAL: &str = "__lcloud_depth";

/// Rewrites a validated module with fuel rule 1.
pub(crate) fn instrument(code: &[u8], shape: &Shape) -> Result<Vec<u8>, DeployError> {
    let mut meter = Meter {
        shape,
        fuel: shape.globals,
        depth: shape.globals + 1,
        next_func: 0,
        globals_done: false,
    };
    let mut module = Module::new();
    meter
        .parse_core_module(&mut module, Parser::new(0), code)
        .map_err(|e| DeployError::Invalid(format!("cannot instrument the module: {e}")))?;
    Ok(module.finish())
}

struct Meter<'a> {
    shape: &'a Shape,
    /// Index of the fuel global.
    fuel: u32,
    /// Index of the depth global.
    depth: u32,
    /// The defined function whose body comes next.
    next_func: u32,
    globals_done: bool,
}

/// Whether a straight-line run ends after `op`.
fn ends_run(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Else
            | Operator::End
            | Operator::Br { .. }
            | Operator::BrIf { .. }
            | Operator::BrTable { .. }
            | Operator::Return
            | Operator::Unreachable
            | Operator::Call { .. }
            | Operator::CallIndirect { .. }
    )
}

impl Meter<'_> {
    fn add_globals(&mut self, globals: &mut GlobalSection) {
        let mutable = |val_type| GlobalType {
            val_type,
            mutable: true,
            shared: false,
        };
        globals.global(mutable(ValType::I64), &ConstExpr::i64_const(0));
        globals.global(mutable(ValType::I32), &ConstExpr::i32_const(0));
        self.globals_done = true;
    }

    /// Charges `cost` (a constant) from the fuel local `fuel`, trapping if it goes below zero.
    fn charge(&self, f: &mut Function, fuel: u32, cost: i64) {
        f.instruction(&Instruction::LocalGet(fuel));
        f.instruction(&Instruction::I64Const(cost));
        f.instruction(&Instruction::I64Sub);
        self.check_fuel(f, fuel);
    }

    /// Stores the fuel left (on the stack) in the local and traps if it is below zero (after
    /// writing it back, so the host sees why).
    fn check_fuel(&self, f: &mut Function, fuel: u32) {
        f.instruction(&Instruction::LocalTee(fuel));
        f.instruction(&Instruction::I64Const(0));
        f.instruction(&Instruction::I64LtS);
        f.instruction(&Instruction::If(BlockType::Empty));
        self.flush(f, fuel);
        f.instruction(&Instruction::Unreachable);
        f.instruction(&Instruction::End);
    }

    /// Writes the fuel local back to the global.
    fn flush(&self, f: &mut Function, fuel: u32) {
        f.instruction(&Instruction::LocalGet(fuel));
        f.instruction(&Instruction::GlobalSet(self.fuel));
    }

    /// Reads the global into the fuel local.
    fn reload(&self, f: &mut Function, fuel: u32) {
        f.instruction(&Instruction::GlobalGet(self.fuel));
        f.instruction(&Instruction::LocalSet(fuel));
    }

    /// Charges from the i32 operand on top of the stack (kept there): `(n >> shift) * mul`.
    fn charge_operand(&self, f: &mut Function, fuel: u32, temp: u32, shift: i64, mul: i64) {
        f.instruction(&Instruction::LocalSet(temp));
        f.instruction(&Instruction::LocalGet(fuel));
        f.instruction(&Instruction::LocalGet(temp));
        f.instruction(&Instruction::I64ExtendI32U);
        if shift != 0 {
            f.instruction(&Instruction::I64Const(shift));
            f.instruction(&Instruction::I64ShrU);
        }
        if mul != 1 {
            f.instruction(&Instruction::I64Const(mul));
            f.instruction(&Instruction::I64Mul);
        }
        f.instruction(&Instruction::I64Sub);
        self.check_fuel(f, fuel);
        f.instruction(&Instruction::LocalGet(temp));
    }

    fn enter_call(&self, f: &mut Function) {
        f.instruction(&Instruction::GlobalGet(self.depth));
        f.instruction(&Instruction::I32Const(1));
        f.instruction(&Instruction::I32Add);
        f.instruction(&Instruction::GlobalSet(self.depth));
        f.instruction(&Instruction::GlobalGet(self.depth));
        f.instruction(&Instruction::I32Const(DEPTH_MAX));
        f.instruction(&Instruction::I32GtS);
        f.instruction(&Instruction::If(BlockType::Empty));
        f.instruction(&Instruction::Unreachable);
        f.instruction(&Instruction::End);
    }

    fn leave_call(&self, f: &mut Function) {
        f.instruction(&Instruction::GlobalGet(self.depth));
        f.instruction(&Instruction::I32Const(1));
        f.instruction(&Instruction::I32Sub);
        f.instruction(&Instruction::GlobalSet(self.depth));
    }
}

type Error = reencode::Error<std::convert::Infallible>;

impl Reencode for Meter<'_> {
    type Error = std::convert::Infallible;

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), Error> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_globals(globals);
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), Error> {
        // A module without globals of its own gets a section for the counters.
        let past_globals = match before {
            None => true,
            Some(s) => matches!(
                s,
                SectionId::Export
                    | SectionId::Start
                    | SectionId::Element
                    | SectionId::DataCount
                    | SectionId::Code
                    | SectionId::Data
            ),
        };
        if past_globals && !self.globals_done {
            let mut globals = GlobalSection::new();
            self.add_globals(&mut globals);
            module.section(&globals);
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), Error> {
        reencode::utils::parse_export_section(self, exports, section)?;
        exports.export(FUEL_GLOBAL, ExportKind::Global, self.fuel);
        exports.export(DEPTH_GLOBAL, ExportKind::Global, self.depth);
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        body: FunctionBody<'_>,
    ) -> Result<(), Error> {
        let ty = self.shape.func_types[self.next_func as usize];
        self.next_func += 1;
        let mut locals: Vec<(u32, ValType)> = Vec::new();
        let mut count = self.shape.type_params[ty as usize];
        for l in body.get_locals_reader()? {
            let (n, t) = l?;
            count += n;
            locals.push((n, self.val_type(t)?));
        }
        // One i32 local for the operand of a dynamically charged instruction, one i64 for
        // the fuel.
        let temp = count;
        locals.push((1, ValType::I32));
        let fuel = count + 1;
        locals.push((1, ValType::I64));
        let mut f = Function::new(locals);
        self.reload(&mut f, fuel);
        let mut reader = body.get_operators_reader()?;
        let mut ops: Vec<Operator<'_>> = Vec::new();
        while !reader.eof() {
            ops.push(reader.read()?);
        }
        // Open blocks: a branch to label `depth` leaves the function.
        let mut depth: u32 = 0;
        let mut at = 0;
        while at < ops.len() {
            let run = ops[at..]
                .iter()
                .position(ends_run)
                .map_or(ops.len() - at, |p| p + 1);
            self.charge(&mut f, fuel, run as i64);
            for op in &ops[at..at + run] {
                match op {
                    Operator::MemoryFill { .. } | Operator::MemoryCopy { .. } => {
                        self.charge_operand(&mut f, fuel, temp, BULK_SHIFT, 1);
                    }
                    Operator::MemoryGrow { .. } => {
                        self.charge_operand(&mut f, fuel, temp, 0, GROW_PAGE_COST);
                    }
                    _ => {}
                }
                let leaves = match op {
                    Operator::Return => true,
                    Operator::End => depth == 0,
                    Operator::Br { relative_depth } | Operator::BrIf { relative_depth } => {
                        *relative_depth == depth
                    }
                    Operator::BrTable { targets } => {
                        targets.default() == depth
                            || targets.targets().any(|t| t.is_ok_and(|t| t == depth))
                    }
                    _ => false,
                };
                match op {
                    Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                        depth += 1
                    }
                    Operator::End => depth = depth.saturating_sub(1),
                    _ => {}
                }
                let call = matches!(op, Operator::Call { .. } | Operator::CallIndirect { .. });
                if call {
                    self.flush(&mut f, fuel);
                    self.enter_call(&mut f);
                } else if leaves {
                    self.flush(&mut f, fuel);
                }
                f.instruction(&self.instruction(op.clone())?);
                if call {
                    self.leave_call(&mut f);
                    self.reload(&mut f, fuel);
                }
            }
            at += run;
        }
        code.function(&f);
        Ok(())
    }
}
