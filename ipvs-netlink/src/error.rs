//! Errors: what went wrong, in which operation, on which object.

use std::fmt;
use std::io;
use std::time::Duration;

/// The operation a request performs, named as an operator would say it
/// (see its `Display`).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    ResolveFamily,
    AddService,
    EditService,
    DeleteService,
    GetService,
    ListServices,
    AddDestination,
    EditDestination,
    DeleteDestination,
    ListDestinations,
    StartDaemon,
    StopDaemon,
    ListDaemons,
    SetTimeouts,
    GetTimeouts,
    GetInfo,
    Zero,
    Flush,
    AttachBpf,
    DetachBpf,
    GetBpf,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::ResolveFamily => "resolve the IPVS netlink family",
            Op::AddService => "add service",
            Op::EditService => "edit service",
            Op::DeleteService => "delete service",
            Op::GetService => "get service",
            Op::ListServices => "list services",
            Op::AddDestination => "add destination",
            Op::EditDestination => "edit destination",
            Op::DeleteDestination => "delete destination",
            Op::ListDestinations => "list destinations",
            Op::StartDaemon => "start sync daemon",
            Op::StopDaemon => "stop sync daemon",
            Op::ListDaemons => "list sync daemons",
            Op::SetTimeouts => "set timeouts",
            Op::GetTimeouts => "get timeouts",
            Op::GetInfo => "get IPVS info",
            Op::Zero => "zero counters",
            Op::Flush => "flush",
            Op::AttachBpf => "attach BPF session map",
            Op::DetachBpf => "detach BPF session map",
            Op::GetBpf => "get BPF session map",
        })
    }
}

/// The kernel's answer to a failed request, by errno. IPVS uses `ESRCH`
/// for a missing service and `ENOENT` for a missing destination or
/// scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `EEXIST`: the service or destination exists already.
    AlreadyExists,
    /// `ENOENT`: no such destination, scheduler, persistence engine or map.
    NotFound,
    /// `ESRCH`: no such service.
    NoSuchService,
    /// `EINVAL`: the kernel rejected an attribute.
    InvalidArgument,
    /// `EPERM` or `EACCES`: the caller lacks `CAP_NET_ADMIN`.
    PermissionDenied,
    /// `EBUSY`: e.g. a session map is attached already.
    Busy,
    /// `EBADF`: the map fd is not open.
    BadFd,
    /// `ERANGE`: a value outside what the kernel accepts.
    OutOfRange,
    /// `ENOMEM`.
    OutOfMemory,
    /// `EOPNOTSUPP` or `ENOTSUPP`.
    NotSupported,
    /// Another errno.
    Other(i32),
}

impl ErrorKind {
    /// The class of a positive errno.
    pub fn from_errno(errno: i32) -> ErrorKind {
        match errno {
            libc::EEXIST => ErrorKind::AlreadyExists,
            libc::ENOENT => ErrorKind::NotFound,
            libc::ESRCH => ErrorKind::NoSuchService,
            libc::EINVAL => ErrorKind::InvalidArgument,
            libc::EPERM | libc::EACCES => ErrorKind::PermissionDenied,
            libc::EBUSY => ErrorKind::Busy,
            libc::EBADF => ErrorKind::BadFd,
            libc::ERANGE => ErrorKind::OutOfRange,
            libc::ENOMEM => ErrorKind::OutOfMemory,
            // 524 is the kernel-internal ENOTSUPP, which leaks to userspace.
            libc::EOPNOTSUPP | 524 => ErrorKind::NotSupported,
            e => ErrorKind::Other(e),
        }
    }
}

/// A reply the crate could not decode; says where in the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{context}: {reason}")]
pub struct DecodeError {
    /// The message, nest or attribute being decoded.
    pub context: String,
    /// What is wrong with it.
    pub reason: String,
}

impl DecodeError {
    pub(crate) fn new(context: impl Into<String>, reason: impl fmt::Display) -> DecodeError {
        DecodeError {
            context: context.into(),
            reason: reason.to_string(),
        }
    }
}

/// Everything the client can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused the request.
    #[error("{op} {object}: {}{}", io::Error::from_raw_os_error(*.errno),
            .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        /// What was asked.
        op: Op,
        /// Of what: the service, destination or map, as text.
        object: String,
        /// The positive errno.
        errno: i32,
        /// The kernel's extended-ACK message, if it sent one.
        message: Option<String>,
    },
    /// No `IPVS` family: the `ip_vs` module is not loaded.
    #[error("the IPVS generic-netlink family is not registered (is the ip_vs module loaded?)")]
    FamilyNotFound,
    /// The kernel did not answer in time.
    #[error("{op} {object}: no answer from the kernel within {timeout:?}")]
    #[allow(missing_docs)]
    Timeout {
        op: Op,
        object: String,
        timeout: Duration,
    },
    /// A reply that does not decode.
    #[error("{op} {object}: malformed reply: {source}")]
    #[allow(missing_docs)]
    Malformed {
        op: Op,
        object: String,
        source: DecodeError,
    },
    /// A request the crate refuses to send, e.g. a scheduler name too long.
    #[error("{op} {object}: {reason}")]
    #[allow(missing_docs)]
    InvalidRequest {
        op: Op,
        object: String,
        reason: String,
    },
    /// The netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
}

impl Error {
    /// The errno class of a kernel refusal, `None` for other failures.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Kernel { errno, .. } => Some(ErrorKind::from_errno(*errno)),
            _ => None,
        }
    }

    /// The raw errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    pub(crate) fn socket(e: neli::err::SocketError) -> Error {
        match e {
            neli::err::SocketError::Io(io) => {
                Error::Socket(io::Error::new(io.kind(), io.to_string()))
            }
            other => Error::Socket(io::Error::other(other.to_string())),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
