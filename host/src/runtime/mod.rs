//! The WebAssembly runtime: compiles connector components, pre-links them
//! against the sandbox's imports, and runs every call in an instance from a
//! pool — a fresh one, or for a plugin that opts in a warm one that served
//! the same tenant before — with a deadline, a memory cap, a share of the
//! memory budget, and what its manifest grants.
//!
//! wasmtime types stay inside this module; the rest of the host sees
//! [`WasmConnector`] through the [`crate::connector::Connector`] trait.
//!
//! - `loader`: the [`Runtime`], which loads components.
//! - `config`: [`RuntimeConfig`], every default in its `Default`.
//! - `error`: [`LoadError`].
//! - `engine`: the one engine, its instance pool and compile cache.
//! - `component`: [`WasmConnector`], a loaded component.
//! - `call`: one guest call, the call slots and their queue, instances and
//!   their stores, warm instances, the guest's log.
//! - `capabilities`: what a manifest may grant, one module each.
//! - `store`: the data of an instance's store.
//! - `memory`: the memory budget of the calls in flight, and the memory the
//!   process may use.
//! - `bindings`: the WIT world's host bindings and their conversions.
//! - `return_limits`: [`ReturnLimits`] on what a guest returns.

mod bindings;
mod call;
mod capabilities;
mod component;
mod config;
mod engine;
mod error;
mod loader;
mod memory;
mod return_limits;
mod store;

pub use self::{
    call::{IdleLimit, ReuseLimits},
    capabilities::{
        CapabilityArgs, CapabilityConfig, ConfigError, CredentialArgs, CredentialRoots, GrantError,
        HttpArgs, HttpConfig, Refusal, SshArgs, SshConfig, StorageArgs, StorageConfig,
    },
    component::WasmConnector,
    config::RuntimeConfig,
    engine::SlotBudget,
    error::LoadError,
    loader::Runtime,
    memory::{BudgetSize, DEFAULT_BUDGET_PERCENT, LimitSource, MemoryLimit},
    return_limits::ReturnLimits,
};
