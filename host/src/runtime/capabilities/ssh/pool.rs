//! SSH connections of one plugin, pooled by identity.
//!
//! An identity is everything that decides whether a connection may serve
//! a call: user, host, port, the private key (and its passphrase), and the
//! destination's own known hosts. A connection serves only its identity,
//! never another. Calls of one identity share its connections, each call's
//! commands on channels of their own (at most [`CHANNELS_PER_CONNECTION`]
//! at once, below OpenSSH's default `MaxSessions` of 10, the SFTP session
//! taking one more); past that a second connection is opened, up to the
//! manifest's `[ssh] max_connections` for the plugin, beyond which calls
//! wait for a channel. Calls that arrive while a connection of their
//! identity is being opened wait for it, as many as its channels, rather
//! than each opening one (a burst of calls opens as many connections as
//! it needs channels, not one per call). A connection that broke is
//! replaced at its next use, and one unused for the idle timeout is closed.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use russh::{
    Disconnect,
    client::{self, Handle},
    keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate},
};
use russh_sftp::client::SftpSession;
use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};

use super::{
    SshGranted,
    error::SshError,
    known_hosts::{KnownHosts, Verdict, fingerprint},
};
use crate::runtime::capabilities::egress::{Endpoint, Protocol, Resolved, authority};

/// Commands one connection runs at once.
pub(super) const CHANNELS_PER_CONNECTION: usize = 8;

/// Whom a call reaches, and as whom: a WIT `destination`, checked.
#[derive(Clone)]
pub(super) struct Destination {
    /// Lower case, without brackets or a trailing dot.
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) key: Arc<PrivateKey>,
    /// The destination's own known-hosts lines.
    pub(super) known_hosts: KnownHosts,
    pub(super) identity: Identity,
}

impl Destination {
    /// `host:port`, as messages and metric labels name it.
    pub(super) fn shown(&self) -> String {
        authority(&self.host, self.port)
    }
}

impl Endpoint for Destination {
    fn protocol(&self) -> Protocol {
        Protocol::Ssh
    }

    fn scheme(&self) -> &'static str {
        "ssh"
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn described(&self) -> String {
        format!("SSH to {}", self.shown())
    }

    fn rule_naming(&self, ip: &str) -> String {
        format!("{ip}:{}", self.port)
    }
}

/// A digest of everything that makes an identity (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Identity([u8; 32]);

impl Identity {
    /// The identity of these parts, each length-prefixed.
    pub(super) fn of(parts: &[&[u8]]) -> Self {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for part in parts {
            digest.update(&(part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.finish().as_ref());
        Self(bytes)
    }
}

/// One open connection.
pub(super) struct Connection {
    identity: Identity,
    handle: Handle<Verifier>,
    sftp: OnceCell<Arc<SftpSession>>,
    channels: Arc<Semaphore>,
    last_used: Mutex<Instant>,
}

/// A channel's worth of a connection, held for one operation.
pub(super) struct Lease {
    pub(super) connection: Arc<Connection>,
    _channel: OwnedSemaphorePermit,
}

impl Connection {
    /// Opens a session channel.
    pub(super) async fn channel(&self) -> Result<russh::Channel<client::Msg>, russh::Error> {
        self.handle.channel_open_session().await
    }

    /// The connection's SFTP session, opened at its first use.
    pub(super) async fn sftp(&self) -> Result<Arc<SftpSession>, String> {
        self.sftp
            .get_or_try_init(|| async {
                let channel = self
                    .handle
                    .channel_open_session()
                    .await
                    .map_err(|err| err.to_string())?;
                channel
                    .request_subsystem(true, "sftp")
                    .await
                    .map_err(|err| err.to_string())?;
                let session = SftpSession::new(channel.into_stream())
                    .await
                    .map_err(|err| err.to_string())?;
                // The operations have timeouts of their own.
                session.set_timeout(24 * 3600);
                Ok(Arc::new(session))
            })
            .await
            .cloned()
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.channels.available_permits() == CHANNELS_PER_CONNECTION).then(|| {
            *self
                .last_used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        })
    }

    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn close(self: Arc<Self>) {
        tokio::spawn(async move {
            let _ = self
                .handle
                .disconnect(Disconnect::ByApplication, "idle", "en")
                .await;
        });
    }
}

/// The connections of one plugin.
pub(super) struct Pool {
    state: Mutex<PoolState>,
    max_connections: usize,
    idle_timeout: Duration,
}

#[derive(Default)]
struct PoolState {
    open: Vec<Arc<Connection>>,
    /// Connections being opened, counted against the maximum.
    opening: Vec<Opening>,
    /// Whether the reaper of idle connections runs.
    reaping: bool,
}

/// A connection being opened, and the calls that wait for it.
struct Opening {
    identity: Identity,
    /// Channels of it taken: the opener's and the waiters'.
    claimed: usize,
    /// Woken when it is open (or failed).
    done: Arc<Notify>,
}

/// What [`Pool::lease`] found.
enum Found {
    Lease(Lease),
    /// Room to open a connection: the opener wakes `done`'s waiters.
    Open(Arc<Notify>),
    /// A connection of the identity is being opened: wait for it, then
    /// look again.
    Opening(tokio::sync::futures::OwnedNotified),
    /// A connection of the identity to wait on.
    Wait(Arc<Connection>),
    Full,
}

impl Pool {
    pub(super) fn new(max_connections: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            max_connections,
            idle_timeout,
        })
    }

    /// A channel on a connection of `destination`'s identity: a pooled
    /// one, or one `grant` opens now; ready before `deadline`.
    pub(super) async fn lease(
        self: &Arc<Self>,
        grant: &SshGranted,
        connector: &Arc<str>,
        destination: &Destination,
        deadline: Instant,
    ) -> Result<Lease, SshError> {
        loop {
            let found = self.find(destination.identity);
            if let Found::Opening(opened) = found {
                if tokio::time::timeout_at(deadline.into(), opened)
                    .await
                    .is_err()
                {
                    return Err(SshError::Timeout(format!(
                        "connecting to {} took until the call's deadline",
                        destination.shown()
                    )));
                }
                continue;
            }
            return self
                .take(found, grant, connector, destination, deadline)
                .await;
        }
    }

    /// A channel as `found` says.
    async fn take(
        self: &Arc<Self>,
        found: Found,
        grant: &SshGranted,
        connector: &Arc<str>,
        destination: &Destination,
        deadline: Instant,
    ) -> Result<Lease, SshError> {
        match found {
            Found::Lease(lease) => Ok(lease),
            Found::Opening(_) => Err(SshError::Unreachable(
                "a connection being opened was taken for one".into(),
            )),
            Found::Open(done) => {
                let opened = open(grant, connector, destination, deadline).await;
                let mut state = self.lock();
                state.opening.retain(|o| !Arc::ptr_eq(&o.done, &done));
                // Its waiters look again: at the new connection, or, if it
                // failed, for room to open one themselves.
                done.notify_waiters();
                let connection = Arc::new(opened?);
                let channel = Arc::clone(&connection.channels)
                    .try_acquire_owned()
                    .map_err(|_| SshError::Unreachable("no channel on a new connection".into()))?;
                state.open.push(Arc::clone(&connection));
                let reap = !std::mem::replace(&mut state.reaping, true);
                drop(state);
                if reap {
                    self.reap_idle();
                }
                Ok(Lease {
                    connection,
                    _channel: channel,
                })
            }
            Found::Wait(connection) => {
                let waited = tokio::time::timeout_at(
                    deadline.into(),
                    Arc::clone(&connection.channels).acquire_owned(),
                )
                .await;
                match waited {
                    Ok(Ok(channel)) => {
                        connection.touch();
                        Ok(Lease {
                            connection,
                            _channel: channel,
                        })
                    }
                    _ => Err(SshError::Timeout(format!(
                        "every SSH channel to {} was busy until the call's deadline",
                        destination.shown()
                    ))),
                }
            }
            Found::Full => Err(SshError::Unreachable(format!(
                "the plugin has {} SSH connections open, all busy ([ssh] max_connections)",
                self.max_connections
            ))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn find(&self, identity: Identity) -> Found {
        let mut state = self.lock();
        state.open.retain(|c| !c.handle.is_closed());
        for connection in state.open.iter().filter(|c| c.identity == identity) {
            if let Ok(channel) = Arc::clone(&connection.channels).try_acquire_owned() {
                connection.touch();
                return Found::Lease(Lease {
                    connection: Arc::clone(connection),
                    _channel: channel,
                });
            }
        }
        if let Some(opening) = state
            .opening
            .iter_mut()
            .find(|o| o.identity == identity && o.claimed < CHANNELS_PER_CONNECTION)
        {
            opening.claimed += 1;
            return Found::Opening(Arc::clone(&opening.done).notified_owned());
        }
        let room = state.open.len() + state.opening.len() < self.max_connections;
        if !room {
            // Make room by closing another identity's idle connection.
            let Some(at) = state
                .open
                .iter()
                .position(|c| c.identity != identity && c.idle_since().is_some())
            else {
                return match state.open.iter().find(|c| c.identity == identity) {
                    Some(connection) => Found::Wait(Arc::clone(connection)),
                    None => Found::Full,
                };
            };
            state.open.swap_remove(at).close();
        }
        let done = Arc::new(Notify::new());
        state.opening.push(Opening {
            identity,
            claimed: 1,
            done: Arc::clone(&done),
        });
        Found::Open(done)
    }

    /// Closes connections idle for the idle timeout, while any are open.
    fn reap_idle(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut state = pool.lock();
                let (idle, keep): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut state.open).into_iter().partition(|c| {
                        c.handle.is_closed()
                            || c.idle_since()
                                .is_some_and(|since| since.elapsed() >= pool.idle_timeout)
                    });
                state.open = keep;
                let done = state.open.is_empty() && state.opening.is_empty();
                if done {
                    state.reaping = false;
                }
                drop(state);
                for connection in idle {
                    connection.close();
                }
                if done {
                    return;
                }
            }
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for connection in std::mem::take(&mut self.lock().open) {
            connection.close();
        }
    }
}

/// Checks the server's host key against the known hosts, and remembers why
/// it refused one, for the message.
pub(super) struct Verifier {
    host: String,
    port: u16,
    known_hosts: KnownHosts,
    skip: bool,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if self.skip {
            return Ok(true);
        }
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
                "the SSH server at {} offered a host certificate, which is not accepted",
                authority(&self.host, self.port)
            ));
            return Ok(false);
        };
        let shown = authority(&self.host, self.port);
        let offered = format!("{} {}", key.algorithm(), fingerprint(key));
        let refusal = match self.known_hosts.judge(&self.host, self.port, key) {
            Verdict::Known => return Ok(true),
            Verdict::Unknown => format!(
                "the host key of {shown} is not known: the server offered {offered}; add the \
                 host's key to the known hosts (the connection's known_hosts_data, or the \
                 plugin's [ssh] known_hosts or known_hosts_file)"
            ),
            Verdict::Mismatch => format!(
                "the host key of {shown} does not match its known hosts: the server offered \
                 {offered}; if the host's key changed, update its known hosts"
            ),
            Verdict::Revoked => {
                format!("the host key of {shown} is revoked: the server offered {offered}")
            }
        };
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(refusal);
        Ok(false)
    }
}

/// Connects to `destination` within `deadline`: resolves it, judges its
/// addresses, verifies the host key and authenticates.
async fn open(
    grant: &SshGranted,
    connector: &Arc<str>,
    destination: &Destination,
    deadline: Instant,
) -> Result<Connection, SshError> {
    let shown = destination.shown();
    let connect_by = deadline.min(Instant::now() + grant.limits.connect_timeout);
    let timed_out = || {
        SshError::Timeout(format!(
            "connecting to {shown} took longer than {} s",
            grant.limits.connect_timeout.as_secs_f64()
        ))
    };
    let resolved = tokio::time::timeout_at(
        connect_by.into(),
        tokio::net::lookup_host((destination.host.as_str(), destination.port)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|err| SshError::Unreachable(format!("cannot resolve {}: {err}", destination.host)))?;
    let addresses: Vec<SocketAddr> = match grant.addresses.judge(destination, resolved) {
        Resolved::Reach(addresses) => addresses,
        Resolved::Refused(refused) => {
            grant.metrics.denied(connector, &shown, "address");
            return Err(SshError::NotAllowed(refused.message(destination)));
        }
    };
    let mut last_error = format!("{} resolves to no address", destination.host);
    let mut stream = None;
    for address in addresses {
        match tokio::time::timeout_at(connect_by.into(), tokio::net::TcpStream::connect(address))
            .await
        {
            Ok(Ok(connected)) => {
                stream = Some(connected);
                break;
            }
            Ok(Err(err)) => last_error = format!("cannot connect to {shown} ({address}): {err}"),
            Err(_) => return Err(timed_out()),
        }
    }
    let stream = stream.ok_or(SshError::Unreachable(last_error))?;
    let _ = stream.set_nodelay(true);
    let refusal = Arc::new(Mutex::new(None));
    let mut known_hosts = grant.known_hosts.clone();
    known_hosts.extend(&destination.known_hosts);
    let verifier = Verifier {
        host: destination.host.clone(),
        port: destination.port,
        known_hosts,
        skip: grant.skip_host_key_verification,
        refusal: Arc::clone(&refusal),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let handshake = tokio::time::timeout_at(
        connect_by.into(),
        client::connect_stream(config, stream, verifier),
    )
    .await
    .map_err(|_| timed_out())?;
    let mut handle = match handshake {
        Ok(handle) => handle,
        Err(err) => {
            let refused = refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            return Err(match refused {
                Some(message) => {
                    grant.metrics.denied(connector, &shown, "host_key");
                    SshError::HostKey(message)
                }
                None => SshError::Unreachable(format!("SSH handshake with {shown} failed: {err}")),
            });
        }
    };
    if grant.skip_host_key_verification {
        tracing::warn!(
            connector = %connector,
            "SSH to {shown}: host key not verified ([ssh] skip_host_key_verification)"
        );
    }
    let authenticated = tokio::time::timeout_at(connect_by.into(), async {
        let hash = handle.best_supported_rsa_hash().await?.flatten();
        handle
            .authenticate_publickey(
                destination.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::clone(&destination.key), hash),
            )
            .await
    })
    .await
    .map_err(|_| timed_out())?
    .map_err(|err| SshError::Unreachable(format!("authenticating to {shown} failed: {err}")))?;
    if !authenticated.success() {
        return Err(SshError::Authentication(format!(
            "the SSH server at {shown} refused the key {} for user {}",
            fingerprint(destination.key.public_key()),
            destination.user
        )));
    }
    grant.metrics.connected(connector, &shown);
    Ok(Connection {
        identity: destination.identity,
        handle,
        sftp: OnceCell::new(),
        channels: Arc::new(Semaphore::new(CHANNELS_PER_CONNECTION)),
        last_used: Mutex::new(Instant::now()),
    })
}
