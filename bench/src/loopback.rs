//! Load and attacks go to this machine only. Every URL a tool is given passes through [`ensure`] before the
//! first byte is sent, as `loadtest/run.sh` does for k6: five thousand half-open connections or a 10x burst
//! aimed at someone else's host by a typo would be an attack on them.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};

/// The socket address of `url` (`http://host:port[/]`), provided it is a loopback address.
pub fn ensure(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host_port = rest.trim_end_matches('/');
    if host_port.contains('/') {
        bail!("{url}: expected http://host:port without a path");
    }
    // `localhost` may resolve to several addresses; every one of them must be loopback.
    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .with_context(|| format!("{url}: not a host:port"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        bail!("{url}: resolves to no address");
    };
    if let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) {
        bail!("{url}: only loopback targets are allowed, and this one resolves to {bad}");
    }
    Ok(first)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_pass() {
        assert_eq!(
            ensure("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(ensure("http://127.1.2.3:9/").is_ok());
        assert!(ensure("[::1]:50051").is_ok());
    }

    #[test]
    fn other_hosts_are_refused() {
        assert!(ensure("http://10.0.0.1:8080").is_err());
        assert!(ensure("http://0.0.0.0:8080").is_err());
        assert!(ensure("http://[2001:db8::1]:80").is_err());
        assert!(ensure("http://127.0.0.1:8080/v1/classify").is_err());
        assert!(ensure("http://127.0.0.1").is_err(), "no port");
    }
}
