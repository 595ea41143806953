//! What a plugin's manifest may grant, each capability one module, as a
//! Spin factor is (see [`Capability`]):
//!
//! - `outbound_http`: the allow-list and limits of `allowed_hosts` and
//!   `[http]`, one pooled client per plugin with its TLS trust and the
//!   server's proxies, egress judged by address;
//! - `pod_credentials`: connection values read from the pod's environment
//!   and files (`[credentials]`);
//! - `ssh`: commands and files on the hosts of `[ssh]`, over pooled
//!   connections, host keys verified;
//! - `storage`: files moved into the call's output prefix;
//! - `call_deadline`: the time left before the call's deadline, granted to
//!   every plugin.
//!
//! Beside them, `credential_roots`: which of the pod's files and variables
//! any manifest may name, for every capability's [`LoadScope`]; and
//! `egress`: the host rules and address checks of every capability that
//! connects.
//!
//! The capabilities are listed once, in the `capabilities!` invocation
//! below: adding one is its module and a line there. The list makes their
//! flags ([`CapabilityArgs`]), settings ([`CapabilityConfig`]), grants,
//! per-instance states and imports into one of each.

mod call_deadline;
mod capability;
mod concurrent_calls;
mod config_error;
mod credential_roots;
mod egress;
mod outbound_http;
mod pod_credentials;
mod ssh;
mod storage;

use wasmtime::component::Linker;

pub use self::call_deadline::wit_interface as call_interface;
pub(in crate::runtime) use self::capability::{
    CallArgs, CallScope, CapabilityView, HasState, InstanceScope, LoadScope, ViewOf, view_of,
};
pub(in crate::runtime) use self::concurrent_calls::{CallEnd, ConcurrentCall, ConcurrentCalls};
pub use self::outbound_http::{http_retries_interface, waits_interface};
pub use self::ssh::wit_interface as ssh_interface;
pub use self::storage::wit_interface as storage_interface;
use self::{
    call_deadline::CallDeadline, outbound_http::OutboundHttp, pod_credentials::PodCredentials,
    ssh::Ssh, storage::Storage,
};
pub use self::{
    capability::{Capability, GrantError},
    config_error::ConfigError,
    credential_roots::{CredentialArgs, CredentialRoots, Refusal},
    outbound_http::{HttpArgs, HttpConfig},
    ssh::{SshArgs, SshConfig},
    storage::{StorageArgs, StorageConfig},
};
use super::store::InstanceState;
use crate::{file_stamp::FileRead, manifest::Manifest};

/// Makes the set of `$field: $capability` into the types and functions that
/// hold or call each of them.
macro_rules! capabilities {
    ($($(#[doc = $doc:literal])* $field:ident: $capability:ty),* $(,)?) => {
        /// The command-line flags of every capability, and of what manifests
        /// may read of the pod.
        #[derive(Debug, Clone, clap::Args)]
        pub struct CapabilityArgs {
            $(
                $(#[doc = $doc])*
                #[command(flatten)]
                pub $field: <$capability as Capability>::Args,
            )*
            /// What of the pod manifests may read.
            #[command(flatten)]
            pub roots: CredentialArgs,
        }

        /// The server-wide settings of every capability.
        #[derive(Debug, Clone, Default)]
        pub struct CapabilityConfig {
            $(
                $(#[doc = $doc])*
                pub $field: <$capability as Capability>::Config,
            )*
            /// What of the pod manifests may read.
            pub roots: CredentialRoots,
        }

        impl CapabilityArgs {
            /// The settings these flags ask for.
            pub fn into_config(self) -> Result<CapabilityConfig, ConfigError> {
                Ok(CapabilityConfig {
                    $($field: <$capability as Capability>::configure(self.$field)?,)*
                    roots: self.roots.into_roots()?,
                })
            }
        }

        /// Every capability, with its server-wide settings.
        pub(in crate::runtime) struct Capabilities {
            $($field: $capability,)*
            roots: CredentialRoots,
        }

        /// What one plugin is granted: every capability's grant.
        pub(in crate::runtime) struct Grants {
            $($field: <$capability as Capability>::Grant,)*
        }

        /// What one instance's store holds for the capabilities.
        pub(in crate::runtime) struct States {
            $($field: <$capability as Capability>::State,)*
        }

        $(
            impl HasState<$capability> for InstanceState<States> {
                fn view(&mut self) -> CapabilityView<'_, <$capability as Capability>::State> {
                    let (states, table, calls) = self.capabilities_and_table();
                    CapabilityView {
                        state: &mut states.$field,
                        table,
                        calls,
                    }
                }
            }
        )*

        impl Capabilities {
            /// Every capability with its settings, their metrics registered
            /// in `metrics`.
            pub(in crate::runtime) fn new(
                config: &CapabilityConfig,
                metrics: &crate::metrics::MetricRegistry,
            ) -> anyhow::Result<Self> {
                Ok(Self {
                    $($field: <$capability as Capability>::new(&config.$field, metrics)?,)*
                    roots: config.roots.clone(),
                })
            }

            /// Every capability's grant for the plugin of `manifest`, with
            /// the files they read; a key no capability owns is an error.
            pub(in crate::runtime) fn grant(
                &self,
                manifest: &Manifest,
            ) -> Result<(Grants, Vec<FileRead>), GrantError> {
                let owned: &[&[&str]] = &[$(<$capability as Capability>::MANIFEST_KEYS,)*];
                if let Some(unknown) = manifest
                    .sections
                    .keys()
                    .find(|key| !owned.iter().any(|keys| keys.contains(&key.as_str())))
                {
                    return Err(GrantError::UnknownKey(unknown.clone()));
                }
                let mut load = LoadScope::new(manifest, &self.roots);
                let grants = Grants {
                    $($field: self.$field.grant(&mut load)?,)*
                };
                Ok((grants, load.into_files_read()))
            }

            /// The imports of every capability, beside WASI's.
            pub(in crate::runtime) fn linker(
                engine: &wasmtime::Engine,
            ) -> anyhow::Result<Linker<HostState>> {
                let mut linker = Linker::new(engine);
                wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
                $(<$capability as Capability>::add_to_linker(&mut linker)?;)*
                Ok(linker)
            }
        }

        impl States {
            /// Lets every capability keep what it needs of a call beginning.
            pub(in crate::runtime) fn begin_call(&mut self, call: &CallScope) {
                $(<$capability as Capability>::begin_call(&mut self.$field, call);)*
            }
        }

        impl Grants {
            /// Every capability's part of a new instance's store.
            pub(in crate::runtime) fn instance_states(&self, instance: &InstanceScope) -> States {
                States {
                    $($field: <$capability as Capability>::instance_state(&self.$field, instance),)*
                }
            }

            /// Lets every capability shape a call's arguments.
            pub(in crate::runtime) fn shape_call(&self, call: &mut CallArgs<'_>) {
                $(<$capability as Capability>::shape_call(&self.$field, call);)*
            }

            /// Whether a capability fills calls' connections from the pod.
            pub(in crate::runtime) fn fill_connection(&self) -> bool {
                false $(|| <$capability as Capability>::fills_connection(&self.$field))*
            }
        }
    };
}

capabilities! {
    /// Outbound HTTP.
    http: OutboundHttp,
    /// Credentials from the pod.
    credentials: PodCredentials,
    /// SSH.
    ssh: Ssh,
    /// Object storage.
    storage: Storage,
    /// The call's deadline.
    deadline: CallDeadline,
}

/// The data of an instance's store, with every capability's state.
pub(in crate::runtime) type HostState = InstanceState<States>;
