//! Values of flags and file fields: port ranges, Go durations, CIDR
//! lists, bind addresses, interface names and label values, each parsed
//! into an error that names where it came from.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{invalid, Cidr, ConfigError};

/// An inclusive port range `MIN-MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    /// Whether the ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// Parses `MIN-MAX` (the SNAT range), or `MIN<whitespace>MAX` (the
    /// format of `/proc/sys/net/ipv4/ip_local_port_range`).
    pub(super) fn parse(s: &str) -> Result<PortRange, String> {
        let s = s.trim();
        let (a, b) = s
            .split_once('-')
            .or_else(|| s.split_once(char::is_whitespace))
            .ok_or_else(|| "expected MIN-MAX, e.g. 61000-65000".to_string())?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{:?} is not a port 1..=65535", p.trim()))
        };
        let (min, max) = (port(a)?, port(b)?);
        if min > max {
            return Err(format!("start {min} is above end {max}"));
        }
        Ok(PortRange { min, max })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// Fails when the SNAT range shares ports with the kernel's ephemeral range
/// read from `sysctl` (normally `/proc/sys/net/ipv4/ip_local_port_range`):
/// a local socket's ephemeral port could then equal a SNAT port and the
/// BPF program would rewrite its replies. A daemon-start check, not part of
/// [`Config::from_args`](super::Config::from_args), because it reads the
/// running kernel.
pub fn check_snat_range_against(range: PortRange, sysctl: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(sysctl).map_err(|source| ConfigError::Sysctl {
        path: sysctl.to_path_buf(),
        source,
    })?;
    let local = PortRange::parse(&text).map_err(|reason| {
        invalid(
            &sysctl.display().to_string(),
            text.trim(),
            format!("cannot read the local port range: {reason}"),
        )
    })?;
    if range.overlaps(&local) {
        return Err(ConfigError::Conflict {
            field: "--snat-port-range".to_string(),
            reason: format!(
                "{range} overlaps the kernel's ephemeral ports {local} ({}); \
                 pick a range outside it or narrow ip_local_port_range",
                sysctl.display()
            ),
        });
    }
    Ok(())
}

/// Parses a Go `time.Duration` string (`"30s"`, `"1m0s"`, `"1h2m3.5s"`,
/// `"500ms"`, `"0"`), as kube-proxy's flags and config file use them.
/// Negative durations are refused: none of ours can be negative.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err("negative durations are not allowed".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; use e.g. \"30s\", \"1m0s\", \"500ms\"".into());
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(format!("{orig:?}: expected a number before each unit"));
        }
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{orig:?}: {num:?} is not a number"))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("{orig:?}: missing unit (ns, us, ms, s, m, h)")),
            u => {
                return Err(format!(
                    "{orig:?}: unknown unit {u:?} (ns, us, ms, s, m, h)"
                ))
            }
        };
        total += n * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{orig:?}: {e}"))
}

/// Formats a duration the way Go prints it (`1m0s`, `500ms`, `0s`), for
/// help texts and logs that operators compare with kube-proxy's.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let ns = d.as_nanos();
        return if ns.is_multiple_of(1_000_000) {
            format!("{}ms", ns / 1_000_000)
        } else if ns.is_multiple_of(1_000) {
            format!("{}µs", ns / 1_000)
        } else {
            format!("{ns}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_nanos();
    let sec = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => sec,
        (0, m) => format!("{m}m{sec}"),
        (h, m) => format!("{h}h{m}m{sec}"),
    }
}

/// Where a value came from, to name it in errors.
#[derive(Clone, Copy)]
pub(super) enum Origin<'a> {
    Flag(&'static str),
    File(&'a Path, &'static str),
}

impl Origin<'_> {
    pub(super) fn name(self) -> String {
        match self {
            Origin::Flag(f) => f.to_string(),
            Origin::File(p, f) => format!("{}: {f}", p.display()),
        }
    }
}

pub(super) fn duration(src: Origin<'_>, s: &str) -> Result<Duration, ConfigError> {
    parse_go_duration(s).map_err(|r| invalid(&src.name(), s, r))
}

/// IPVS timeouts are whole seconds in the kernel.
pub(super) fn ipvs_timeout(src: Origin<'_>, s: &str) -> Result<Duration, ConfigError> {
    let d = duration(src, s)?;
    if d.subsec_nanos() != 0 {
        return Err(invalid(
            &src.name(),
            s,
            "IPVS timeouts are whole seconds (e.g. 15s, 2m0s)",
        ));
    }
    if d.as_secs() > u64::from(u32::MAX) {
        return Err(invalid(&src.name(), s, "too large for IPVS"));
    }
    Ok(d)
}

pub(super) fn cidrs(src: Origin<'_>, items: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Cidr>().map_err(|r| invalid(&src.name(), s, r)))
        .collect()
}

pub(super) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `IP:PORT`, `[IPv6]:PORT`, or an address alone (kube-proxy appends the
/// default port, `AppendPortIfNeeded`).
pub(super) fn bind_address(
    src: Origin<'_>,
    s: &str,
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, default_port)),
        Err(_) => Err(invalid(
            &src.name(),
            s,
            "expected IP:PORT, e.g. 0.0.0.0:10256 or [::]:10256",
        )),
    }
}

pub(super) fn interface_name(s: &str) -> Result<String, ConfigError> {
    // IFNAMSIZ is 16 including the NUL.
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && !s.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(
            "--uplink",
            s,
            "not an interface name (1-15 characters, no '/', ':' or spaces)",
        ))
    }
}

/// A label value (`service.kubernetes.io/service-proxy-name`): at most 63
/// characters, alphanumerics and `-_.`, alphanumeric at both ends.
pub(super) fn label_value(field: &str, s: &str) -> Result<String, ConfigError> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alnum(s.chars().next())
        && alnum(s.chars().last());
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(
            field,
            s,
            "not a label value (at most 63 of [A-Za-z0-9._-], alphanumeric at both ends)",
        ))
    }
}
