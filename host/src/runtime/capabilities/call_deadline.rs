//! The `flyte:connector/call` interface (since 1.2.0): what a connector may
//! know of the call it serves. Today that is the time left before the
//! call's deadline — the sooner of the client's gRPC deadline and the
//! plugin's timeout — so that work which waits (an SDK's retry backoff)
//! ends before it and the call answers rather than being cut off.
//!
//! Granted to every plugin: it reveals nothing but the call's own clock.

use std::time::Instant;

use wasmtime::component::{Access, Linker};

use super::capability::nanos_left;
use super::capability::{
    CallScope, Capability, CapabilityView, GrantError, HasState, InstanceScope, LoadScope, ViewOf,
    view_of,
};
use super::concurrent_calls::call_of;
use super::config_error::ConfigError;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "import flyte:connector/call@1.3.0;",
        imports: { default: store },
    });
}

pub use self::generated::flyte::connector::call as wit_interface;

/// The capability: the call's deadline, told to the guest.
pub struct CallDeadline;

/// Its flags: none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CallDeadlineArgs {}

/// Its settings: none.
#[derive(Debug, Clone, Default)]
pub struct CallDeadlineConfig {}

/// An instance's state: the deadline of the call it serves now.
#[derive(Debug, Default)]
pub struct InstanceDeadline {
    deadline: Option<Instant>,
}

impl Capability for CallDeadline {
    const MANIFEST_KEYS: &'static [&'static str] = &[];
    type Args = CallDeadlineArgs;
    type Config = CallDeadlineConfig;
    type Grant = ();
    type State = InstanceDeadline;

    fn configure(_args: Self::Args) -> Result<Self::Config, ConfigError> {
        Ok(CallDeadlineConfig {})
    }

    fn new(
        _config: &Self::Config,
        _metrics: &crate::metrics::MetricRegistry,
    ) -> anyhow::Result<Self> {
        Ok(Self)
    }

    fn grant(&self, _load: &mut LoadScope<'_>) -> Result<Self::Grant, GrantError> {
        Ok(())
    }

    fn add_to_linker<T: HasState<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        wit_interface::add_to_linker::<T, ViewOf<Self>>(linker, view_of::<Self, T>)?;
        Ok(())
    }

    fn instance_state(_grant: &Self::Grant, _instance: &InstanceScope) -> Self::State {
        InstanceDeadline::default()
    }

    fn begin_call(state: &mut Self::State, call: &CallScope) {
        state.deadline = call.deadline;
    }
}

impl wit_interface::Host for CapabilityView<'_, InstanceDeadline> {}

impl<T> wit_interface::HostWithStore<T> for ViewOf<CallDeadline> {
    /// The calling call's time: in the async world, the call of the guest
    /// task that asks (0 once it has ended); in the sync world, the call
    /// the instance serves.
    fn time_left(mut access: Access<'_, T, Self>) -> u64 {
        if let Some(call) = call_of(&mut access) {
            return call.time_left();
        }
        nanos_left(access.get().state.deadline)
    }
}
