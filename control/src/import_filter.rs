//! Which URLs `web-download` may fetch, as Glance's `[import_filtering_opts]`:
//! schemes, hosts and ports allowed or refused, and no loopback or
//! link-local address unless its host is allowed by name. The host is
//! resolved once and the fetch pinned to the addresses checked, so a name
//! that resolves differently the second time reaches nothing new.

use std::net::{IpAddr, SocketAddr};

use crate::config::RawUriFilter;

/// The checked filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriFilter {
    allowed_schemes: Vec<String>,
    disallowed_schemes: Vec<String>,
    allowed_hosts: Vec<String>,
    disallowed_hosts: Vec<String>,
    allowed_ports: Vec<u16>,
    disallowed_ports: Vec<u16>,
}

/// A URL that passed, with the addresses its host resolved to.
#[derive(Debug, Clone)]
pub struct Passed {
    /// The URL.
    pub url: url::Url,
    /// Its host, as written.
    pub host: String,
    /// The addresses the fetch may connect to.
    pub addrs: Vec<SocketAddr>,
}

impl Default for UriFilter {
    fn default() -> UriFilter {
        UriFilter {
            allowed_schemes: vec!["http".into(), "https".into()],
            disallowed_schemes: Vec::new(),
            allowed_hosts: Vec::new(),
            disallowed_hosts: Vec::new(),
            allowed_ports: vec![80, 443],
            disallowed_ports: Vec::new(),
        }
    }
}

impl UriFilter {
    /// From the config; schemes other than http and https are refused.
    pub fn check(raw: RawUriFilter) -> Result<UriFilter, String> {
        let allowed_schemes = raw
            .allowed_schemes
            .unwrap_or_else(|| vec!["http".into(), "https".into()]);
        if let Some(s) = allowed_schemes
            .iter()
            .find(|s| *s != "http" && *s != "https")
        {
            return Err(format!(
                "allowed_schemes: {s:?} cannot be fetched; use http and https"
            ));
        }
        let lower = |v: Vec<String>| v.iter().map(|h| canonical_host(h)).collect();
        Ok(UriFilter {
            allowed_schemes,
            disallowed_schemes: raw.disallowed_schemes,
            allowed_hosts: lower(raw.allowed_hosts),
            disallowed_hosts: lower(raw.disallowed_hosts),
            allowed_ports: raw.allowed_ports.unwrap_or_else(|| vec![80, 443]),
            disallowed_ports: raw.disallowed_ports,
        })
    }

    /// The syntactic checks: scheme, host and port. `Err` says why not.
    pub fn check_url(&self, raw: &str) -> Result<(url::Url, String, u16), String> {
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
        // Credentials would be sent, and shown in the task's input.
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed".into());
        }
        let scheme = url.scheme();
        let scheme_ok = if self.allowed_schemes.is_empty() {
            !self.disallowed_schemes.iter().any(|s| s == scheme)
        } else {
            self.allowed_schemes.iter().any(|s| s == scheme)
        };
        if !scheme_ok {
            return Err(format!("scheme {scheme:?} is not allowed"));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => canonical_host(&h.to_string()),
            None => return Err("no host".into()),
        };
        // A host of dots alone ("https://./") names nothing.
        if host.is_empty() {
            return Err("no host".into());
        }
        let host_ok = if self.allowed_hosts.is_empty() {
            !self.disallowed_hosts.contains(&host)
        } else {
            self.allowed_hosts.contains(&host)
        };
        if !host_ok {
            return Err(format!("host {host:?} is not allowed"));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| "no port".to_owned())?;
        // As Glance: a port left to the scheme's default always passes.
        if url.port().is_some() {
            let port_ok = if self.allowed_ports.is_empty() {
                !self.disallowed_ports.contains(&port)
            } else {
                self.allowed_ports.contains(&port)
            };
            if !port_ok {
                return Err(format!("port {port} is not allowed"));
            }
        }
        Ok((url, host, port))
    }

    /// Checks `raw` and resolves its host; loopback, link-local and
    /// unspecified addresses are refused unless the host is allowed by name.
    pub async fn pass(&self, raw: &str) -> Result<Passed, String> {
        let (url, host, port) = self.check_url(raw)?;
        let named = self.allowed_hosts.contains(&host);
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| format!("host {host:?} does not resolve: {e}"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("host {host:?} does not resolve"));
        }
        if !named && let Some(a) = addrs.iter().find(|a| internal(a.ip())) {
            return Err(format!(
                "host {host:?} is at {}, a loopback, link-local, unspecified or metadata address",
                a.ip()
            ));
        }
        // A refused address is refused however the URL spells it.
        let denied: Vec<IpAddr> = self
            .disallowed_hosts
            .iter()
            .filter_map(|h| h.parse::<IpAddr>().ok())
            .map(plain)
            .collect();
        if self.allowed_hosts.is_empty()
            && let Some(a) = addrs.iter().find(|a| denied.contains(&plain(a.ip())))
        {
            return Err(format!(
                "host {host:?} is at {}, which is not allowed",
                a.ip()
            ));
        }
        Ok(Passed { url, host, addrs })
    }
}

/// A host name as compared: lower case, without the root's trailing dot;
/// an IP address in its canonical form.
fn canonical_host(h: &str) -> String {
    let h = h.trim().trim_start_matches('[').trim_end_matches(']');
    match h.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// The IPv4 address an IPv6 one carries (mapped, compatible, NAT64's
/// 64:ff9b::/96, 6to4's 2002::/16), else the address itself.
fn plain(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(a) = ip else {
        return ip;
    };
    let s = a.segments();
    let v4 = |hi: u16, lo: u16| {
        IpAddr::V4(std::net::Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        ))
    };
    if let Some(m) = a.to_ipv4_mapped() {
        return IpAddr::V4(m);
    }
    match s {
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => v4(hi, lo),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => v4(hi, lo),
        [0x2002, hi, lo, ..] => v4(hi, lo),
        _ => ip,
    }
}

/// Loopback, link-local, unspecified or a cloud's metadata address: this
/// host or its hypervisor, not the network.
fn internal(ip: IpAddr) -> bool {
    match plain(ip) {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_unspecified(),
        IpAddr::V6(a) => {
            // fd00:ec2::254: the instance metadata service over IPv6.
            let metadata = a.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254];
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || metadata
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allowed_hosts: &[&str], ports: Option<Vec<u16>>) -> UriFilter {
        UriFilter::check(RawUriFilter {
            allowed_hosts: allowed_hosts.iter().map(|h| (*h).to_owned()).collect(),
            allowed_ports: ports,
            disallowed_hosts: vec!["bad.example".into()],
            ..RawUriFilter::default()
        })
        .unwrap()
    }

    #[test]
    fn schemes_hosts_and_ports_follow_the_lists() {
        let f = filter(&[], None);
        assert!(f.check_url("http://images.example/cirros.img").is_ok());
        assert!(f.check_url("https://images.example:443/c").is_ok());
        for (url, why) in [
            ("ftp://images.example/c", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("http://bad.example/c", "host"),
            ("http://images.example:8080/c", "port 8080"),
            ("not a url", "not a URL"),
        ] {
            let e = f.check_url(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
        // An allow list is the only host list that counts.
        let only = filter(&["mirror.example"], Some(vec![8080]));
        assert!(only.check_url("http://mirror.example:8080/c").is_ok());
        assert!(only.check_url("http://other.example/c").is_err());
        assert!(
            UriFilter::check(RawUriFilter {
                allowed_schemes: Some(vec!["file".into()]),
                ..RawUriFilter::default()
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_its_host_is_allowed() {
        let f = filter(&[], Some(vec![9999]));
        for url in [
            "http://127.0.0.1:9999/x",
            "http://[::1]:9999/x",
            "http://localhost:9999/x",
            "http://169.254.169.254:9999/latest/meta-data",
            "http://[::ffff:127.0.0.1]:9999/x",
            "http://0.0.0.0:9999/x",
        ] {
            let e = f.pass(url).await.unwrap_err();
            assert!(
                e.contains("loopback") || e.contains("resolve"),
                "{url}: {e}"
            );
        }
        let allowed = filter(&["127.0.0.1"], Some(vec![9999]));
        let passed = allowed.pass("http://127.0.0.1:9999/x").await.unwrap();
        assert_eq!(passed.addrs, vec!["127.0.0.1:9999".parse().unwrap()]);
    }
}
