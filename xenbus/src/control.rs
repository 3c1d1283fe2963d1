//! Domain control through xenstore: the toolstack asks us to shut down by writing
//! `control/shutdown` (`xl shutdown`, `xl reboot`, `xl save`), and learns which requests we
//! honour from the `control/feature-*` keys we write.

use alloc::string::String;

use crate::client::{Error, Transport, Xenstore};
use crate::store::{parse_string, Store};
use crate::wire::XsError;

/// Where the toolstack writes shutdown requests; watch it to hear them.
pub const SHUTDOWN_PATH: &str = "control/shutdown";

/// What the toolstack asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownRequest {
    Poweroff,
    Halt,
    Reboot,
    Suspend,
    /// A request we do not know (Linux knows `sysrq`, for one): the caller decides.
    Other(String),
}

impl ShutdownRequest {
    /// A `control/shutdown` value; empty means no request (we cleared it, or none was made).
    pub fn parse(value: &[u8]) -> Result<Option<Self>, Error> {
        Ok(Some(match parse_string(value.into())?.as_str() {
            "" => return Ok(None),
            "poweroff" => ShutdownRequest::Poweroff,
            "halt" => ShutdownRequest::Halt,
            "reboot" => ShutdownRequest::Reboot,
            "suspend" => ShutdownRequest::Suspend,
            other => ShutdownRequest::Other(other.into()),
        }))
    }
}

/// Reads and acknowledges a pending shutdown request in one transaction: clearing the key is
/// how the toolstack learns we saw it, and doing both atomically keeps a request written
/// in between from being erased unseen.
pub fn take_shutdown_request<T: Transport>(
    xs: &mut Xenstore<T>,
) -> Result<Option<ShutdownRequest>, Error> {
    xs.transaction(|tx| {
        let value = match tx.read(SHUTDOWN_PATH) {
            Err(Error::Xs(XsError::NoEnt)) => return Ok(None),
            other => other?,
        };
        let request = ShutdownRequest::parse(&value)?;
        if request.is_some() {
            tx.write(SHUTDOWN_PATH, b"")?;
        }
        Ok(request)
    })
}

/// Requests the toolstack may rely on us to honour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Poweroff,
    Reboot,
    Suspend,
    Sysrq,
    /// We follow `memory/target` (libxl reads it before it lowers our target).
    Balloon,
}

impl Feature {
    /// The key announcing the feature, as Linux writes it.
    pub fn path(self) -> &'static str {
        match self {
            Feature::Poweroff => "control/feature-poweroff",
            Feature::Reboot => "control/feature-reboot",
            Feature::Suspend => "control/feature-suspend",
            Feature::Sysrq => "control/feature-sysrq",
            Feature::Balloon => "control/feature-balloon",
        }
    }
}

/// Where the toolstack says how much memory we should have (`xl mem-set`), in KiB; watch it
/// to hear changes.
pub const MEMORY_TARGET_PATH: &str = "memory/target";
/// The most memory the toolstack gave the domain at creation (`maxmem`), in KiB.
pub const MEMORY_STATIC_MAX_PATH: &str = "memory/static-max";

/// A `memory/*` value in KiB: decimal digits only, as libxl writes them.
pub fn parse_kib(value: &[u8]) -> Result<u64, Error> {
    crate::store::parse_u64(value).ok_or(Error::BadValue)
}

/// Reads a `memory/*` value in KiB.
pub fn read_kib<T: Transport>(xs: &mut Xenstore<T>, path: &str) -> Result<u64, Error> {
    parse_kib(&xs.read(path)?)
}

/// Writes `1` to the key of each feature.
pub fn advertise<T: Transport>(xs: &mut Xenstore<T>, features: &[Feature]) -> Result<(), Error> {
    for f in features {
        xs.write(f.path(), b"1")?;
    }
    Ok(())
}

/// Where the toolstack says which vCPUs we may use (`xl vcpu-set`, and at creation `vcpus`
/// below `maxvcpus`): `cpu/<n>/availability`. Watch it to hear changes.
pub const CPU_PATH: &str = "cpu";

/// What `cpu/<n>/availability` says; a vCPU without the key is online (it is the toolstack's
/// to take away, and one that never wrote it never did).
pub fn parse_availability(value: &[u8]) -> Result<bool, Error> {
    match parse_string(value.into())?.as_str() {
        "online" => Ok(true),
        "offline" => Ok(false),
        _ => Err(Error::BadValue),
    }
}

/// Whether the toolstack wants vCPU `cpu` online (see [`parse_availability`]).
pub fn vcpu_available<T: Transport>(xs: &mut Xenstore<T>, cpu: u32) -> Result<bool, Error> {
    match xs.read(&alloc::format!("{CPU_PATH}/{cpu}/availability")) {
        Err(Error::Xs(XsError::NoEnt)) => Ok(true),
        other => parse_availability(&other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values_are_decimal_kib() {
        assert_eq!(parse_kib(b"131072"), Ok(131072));
        assert_eq!(parse_kib(b"0"), Ok(0));
        assert_eq!(parse_kib(b""), Err(Error::BadValue));
        assert_eq!(parse_kib(b"-1"), Err(Error::BadValue));
        assert_eq!(parse_kib(b"32M"), Err(Error::BadValue));
        assert_eq!(parse_kib(b"99999999999999999999999"), Err(Error::BadValue));
    }

    #[test]
    fn availability_values() {
        assert_eq!(parse_availability(b"online"), Ok(true));
        assert_eq!(parse_availability(b"offline"), Ok(false));
        assert_eq!(parse_availability(b""), Err(Error::BadValue));
        assert_eq!(parse_availability(b"Online"), Err(Error::BadValue));
        assert_eq!(parse_availability(b"online\0"), Err(Error::BadValue));
        assert_eq!(parse_availability(b"\xffonline"), Err(Error::BadValue));
    }

    #[test]
    fn shutdown_values() {
        let parse = ShutdownRequest::parse;
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"poweroff"), Ok(Some(ShutdownRequest::Poweroff)));
        assert_eq!(parse(b"halt"), Ok(Some(ShutdownRequest::Halt)));
        assert_eq!(parse(b"reboot"), Ok(Some(ShutdownRequest::Reboot)));
        assert_eq!(parse(b"suspend"), Ok(Some(ShutdownRequest::Suspend)));
        assert_eq!(parse(b"sysrq"), Ok(Some(ShutdownRequest::Other("sysrq".into()))));
        assert_eq!(parse(b"Reboot"), Ok(Some(ShutdownRequest::Other("Reboot".into()))));
        assert_eq!(parse(b"reboot\0"), Err(Error::BadValue));
        assert_eq!(parse(b"\xffoff"), Err(Error::BadValue));
    }

    #[test]
    fn feature_keys() {
        assert_eq!(Feature::Poweroff.path(), "control/feature-poweroff");
        assert_eq!(Feature::Suspend.path(), "control/feature-suspend");
    }
}
