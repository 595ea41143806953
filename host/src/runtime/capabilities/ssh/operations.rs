//! What a session does on a connection: commands on a channel of their
//! own, files through the connection's SFTP session. Every operation ends
//! by its deadline; outputs and files are capped by the manifest's limits.

use std::time::Instant;

use russh::{ChannelMsg, Sig};
use russh_sftp::{
    client::error::Error as SftpError,
    protocol::{FileAttributes, OpenFlags, StatusCode},
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{error::SshError, pool::Connection};

/// What a command did.
#[derive(Debug, Default)]
pub(super) struct ExecOutput {
    pub(super) exit_status: Option<u32>,
    pub(super) exit_signal: Option<String>,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) truncated: bool,
}

/// A remote file's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileInfo {
    pub(super) size: u64,
    pub(super) is_directory: bool,
    pub(super) mode: u32,
    pub(super) modified: u64,
}

impl From<&FileAttributes> for FileInfo {
    fn from(attributes: &FileAttributes) -> Self {
        Self {
            size: attributes.size.unwrap_or(0),
            is_directory: attributes.is_dir(),
            mode: attributes.permissions.unwrap_or(0) & 0o7777,
            modified: attributes.mtime.map_or(0, u64::from),
        }
    }
}

/// A path as SFTP takes it: `~/x` and `~` are relative to the home
/// directory, as relative paths are.
fn sftp_path(path: &str) -> String {
    match path {
        "~" => ".".to_owned(),
        _ => path.strip_prefix("~/").unwrap_or(path).to_owned(),
    }
}

/// Runs `future` until `deadline`, else fails with `what` timing out.
async fn by<T>(
    deadline: Instant,
    what: impl FnOnce() -> String,
    future: impl Future<Output = Result<T, SshError>>,
) -> Result<T, SshError> {
    tokio::time::timeout_at(deadline.into(), future)
        .await
        .unwrap_or_else(|_| Err(SshError::Timeout(what())))
}

/// Appends `data` to `into` up to `cap` bytes; whether some was dropped.
fn keep(into: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(into.len());
    into.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}

/// Runs `command` with `stdin`, keeping at most `max_output` bytes of each
/// output, until `deadline`.
pub(super) async fn exec(
    connection: &Connection,
    shown: &str,
    command: &str,
    stdin: &[u8],
    max_output: usize,
    deadline: Instant,
    timeout_secs: f64,
) -> Result<ExecOutput, SshError> {
    let broke = |err: russh::Error| {
        SshError::Unreachable(format!("the SSH connection to {shown} failed: {err}"))
    };
    let timed_out = || format!("a command on {shown} ran past its {timeout_secs} s timeout");
    by(deadline, timed_out, async {
        let mut channel = connection.channel().await.map_err(broke)?;
        channel.exec(true, command).await.map_err(broke)?;
        if !stdin.is_empty() {
            channel.data(stdin).await.map_err(broke)?;
        }
        channel.eof().await.map_err(broke)?;
        let mut output = ExecOutput::default();
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    output.truncated |= keep(&mut output.stdout, &data, max_output);
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    output.truncated |= keep(&mut output.stderr, &data, max_output);
                }
                ChannelMsg::ExitStatus { exit_status } => output.exit_status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    output.exit_signal = Some(match signal_name {
                        Sig::Custom(name) => name,
                        other => format!("{other:?}"),
                    });
                }
                ChannelMsg::Failure => {
                    return Err(SshError::Remote(format!(
                        "the SSH server at {shown} refused to run the command"
                    )));
                }
                _ => {}
            }
        }
        Ok(output)
    })
    .await
}

/// The SFTP error as the guest sees it.
fn sftp_error(shown: &str, path: &str, err: SftpError) -> SshError {
    match err {
        SftpError::Status(status) => SshError::Remote(format!(
            "{path} on {shown}: {}",
            match status.status_code {
                StatusCode::NoSuchFile => "no such file or directory".to_owned(),
                StatusCode::PermissionDenied => "permission denied".to_owned(),
                _ if status.error_message.is_empty() => status.status_code.to_string(),
                _ => status.error_message,
            }
        )),
        SftpError::Timeout => SshError::Timeout(format!("{path} on {shown}: SFTP timed out")),
        other => SshError::Unreachable(format!("SFTP to {shown} failed: {other}")),
    }
}

fn io_error(shown: &str, path: &str, err: std::io::Error) -> SshError {
    SshError::Remote(format!("{path} on {shown}: {err}"))
}

async fn sftp(
    connection: &Connection,
    shown: &str,
) -> Result<std::sync::Arc<russh_sftp::client::SftpSession>, SshError> {
    connection
        .sftp()
        .await
        .map_err(|err| SshError::Unreachable(format!("SFTP to {shown} failed: {err}")))
}

/// Writes `contents` to `path` (created or replaced) with mode `mode`.
pub(super) async fn write_file(
    connection: &Connection,
    shown: &str,
    path: &str,
    contents: &[u8],
    mode: u32,
    deadline: Instant,
) -> Result<(), SshError> {
    by(
        deadline,
        || format!("writing {path} on {shown} timed out"),
        async {
            let sftp = sftp(connection, shown).await?;
            let remote = sftp_path(path);
            let attributes = FileAttributes {
                permissions: Some(mode & 0o7777),
                ..FileAttributes::empty()
            };
            let mut file = sftp
                .open_with_flags_and_attributes(
                    &remote,
                    OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                    attributes,
                )
                .await
                .map_err(|err| sftp_error(shown, path, err))?;
            file.write_all(contents)
                .await
                .map_err(|err| io_error(shown, path, err))?;
            file.shutdown()
                .await
                .map_err(|err| io_error(shown, path, err))?;
            // The mode of a file that existed, and past the server's umask.
            let mut attributes = FileAttributes::empty();
            attributes.permissions = Some(mode & 0o7777);
            sftp.set_metadata(&remote, attributes)
                .await
                .map_err(|err| sftp_error(shown, path, err))
        },
    )
    .await
}

/// Up to `length` bytes of `path` from `offset`.
pub(super) async fn read_file(
    connection: &Connection,
    shown: &str,
    path: &str,
    offset: u64,
    length: usize,
    deadline: Instant,
) -> Result<Vec<u8>, SshError> {
    by(
        deadline,
        || format!("reading {path} on {shown} timed out"),
        async {
            let sftp = sftp(connection, shown).await?;
            let mut file = sftp
                .open_with_flags(sftp_path(path), OpenFlags::READ)
                .await
                .map_err(|err| sftp_error(shown, path, err))?;
            if offset > 0 {
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|err| io_error(shown, path, err))?;
            }
            let mut contents = Vec::new();
            (&mut file)
                .take(length as u64)
                .read_to_end(&mut contents)
                .await
                .map_err(|err| io_error(shown, path, err))?;
            Ok(contents)
        },
    )
    .await
}

/// The last `lines` lines of `path`, within its last `max_bytes`.
pub(super) async fn read_tail(
    connection: &Connection,
    shown: &str,
    path: &str,
    lines: usize,
    max_bytes: usize,
    deadline: Instant,
) -> Result<Vec<u8>, SshError> {
    let size = match stat(connection, shown, path, deadline).await? {
        Some(info) => info.size,
        None => {
            return Err(SshError::Remote(format!(
                "{path} on {shown}: no such file or directory"
            )));
        }
    };
    let start = size.saturating_sub(max_bytes as u64);
    let window = read_file(connection, shown, path, start, max_bytes, deadline).await?;
    Ok(last_lines(&window, lines).to_vec())
}

/// The last `lines` lines of `text` (a final newline ends the last line).
fn last_lines(text: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (at, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == lines {
                return &text[at + 1..];
            }
        }
    }
    text
}

/// What is at `path`, if anything.
pub(super) async fn stat(
    connection: &Connection,
    shown: &str,
    path: &str,
    deadline: Instant,
) -> Result<Option<FileInfo>, SshError> {
    by(
        deadline,
        || format!("stat of {path} on {shown} timed out"),
        async {
            let sftp = sftp(connection, shown).await?;
            match sftp.metadata(sftp_path(path)).await {
                Ok(attributes) => Ok(Some(FileInfo::from(&attributes))),
                Err(SftpError::Status(status)) if status.status_code == StatusCode::NoSuchFile => {
                    Ok(None)
                }
                Err(err) => Err(sftp_error(shown, path, err)),
            }
        },
    )
    .await
}

/// The entries of directory `path`, by name.
pub(super) async fn list_directory(
    connection: &Connection,
    shown: &str,
    path: &str,
    deadline: Instant,
) -> Result<Vec<(String, FileInfo)>, SshError> {
    by(
        deadline,
        || format!("listing {path} on {shown} timed out"),
        async {
            let sftp = sftp(connection, shown).await?;
            let entries = sftp
                .read_dir(sftp_path(path))
                .await
                .map_err(|err| sftp_error(shown, path, err))?;
            let mut listed: Vec<_> = entries
                .map(|entry| (entry.file_name(), FileInfo::from(&entry.metadata())))
                .collect();
            listed.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(listed)
        },
    )
    .await
}

/// `path`, opened for reading from its start.
pub(super) async fn open(
    connection: &Connection,
    shown: &str,
    path: &str,
    deadline: Instant,
) -> Result<russh_sftp::client::fs::File, SshError> {
    by(
        deadline,
        || format!("opening {path} on {shown} timed out"),
        async {
            let sftp = sftp(connection, shown).await?;
            sftp.open_with_flags(sftp_path(path), OpenFlags::READ)
                .await
                .map_err(|err| sftp_error(shown, path, err))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(last_lines(b"a\nb\nc\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
    }

    #[test]
    fn home_relative_paths_are_sftp_relative() {
        assert_eq!(sftp_path("~/.flyte/jobs/x.out"), ".flyte/jobs/x.out");
        assert_eq!(sftp_path("~"), ".");
        assert_eq!(sftp_path("/abs/x"), "/abs/x");
        assert_eq!(sftp_path("rel/x"), "rel/x");
    }

    #[test]
    fn outputs_are_kept_up_to_their_cap() {
        let mut kept = Vec::new();
        assert!(!keep(&mut kept, b"abc", 5));
        assert!(keep(&mut kept, b"defg", 5));
        assert_eq!(kept, b"abcde");
        assert!(keep(&mut kept, b"h", 5));
    }
}
