//! Where webhooks may go: [`WebhookUrl`] (the syntax: `http(s)://`, a
//! host, no credentials) and the address rules, checked when an alert is
//! saved and again at every delivery ([`check`]): unless
//! `alerts.allow_private_webhooks`, no loopback, private, link-local,
//! multicast or unspecified address (nor the other special ranges listed in
//! [`is_public`]). A name is refused if any of its addresses is.
//!
//! At delivery the HTTP client resolves names through [`CheckedResolver`],
//! which applies the same rules to the addresses it actually connects to, so
//! a name that resolves differently between the check and the connection
//! (DNS rebinding) gains nothing.

use crate::domain::DomainError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// An `http(s)://` URL with a host and no credentials, at most 2048 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let bad = |message: &str| DomainError {
            field: "webhook_url",
            message: message.to_owned(),
        };
        let raw = raw.trim();
        if raw.len() > Self::MAX_LEN {
            return Err(bad("must be at most 2048 bytes"));
        }
        let url = url::Url::parse(raw).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must be an http:// or https:// URL"));
        }
        if url.host().is_none() {
            return Err(bad("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // The signature authenticates deliveries; a password in the URL
            // would only end up in listings and logs.
            return Err(bad("must not carry credentials"));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

/// Why a webhook URL may not be used now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{host} does not resolve: {reason}")]
    Unresolvable { host: String, reason: String },
    #[error("{host} resolves to {ip}, a {kind} address, which webhooks may not reach")]
    NotAllowed {
        host: String,
        ip: IpAddr,
        kind: &'static str,
    },
}

impl AddressError {
    /// The error as a client sees it when saving an alert.
    pub fn into_domain(self) -> DomainError {
        DomainError {
            field: "webhook_url",
            message: self.to_string(),
        }
    }
}

/// What kind of special address `ip` is; `None` for an ordinary public one.
pub fn special_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

/// Whether a webhook may reach `ip` when private addresses are not allowed.
/// Refused: loopback (127/8, ::1), private (10/8, 172.16/12, 192.168/16,
/// fc00::/7), shared (100.64/10), link-local (169.254/16, fe80::/10),
/// multicast (224/4, ff00::/8), unspecified and "this network" (0/8, ::),
/// broadcast and reserved (240/4), and IPv6 forms that embed one of those
/// IPv4 addresses (mapped, compatible, NAT64).
pub fn is_public(ip: IpAddr) -> bool {
    special_kind(ip).is_none()
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if a == 100 && (64..128).contains(&b) => "private (shared)",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    let seg = ip.segments();
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "multicast",
        _ if seg[0] & 0xfe00 == 0xfc00 => "private",
        _ if seg[0] & 0xffc0 == 0xfe80 => "link-local",
        // Site-local, deprecated but still routed as private by some.
        _ if seg[0] & 0xffc0 == 0xfec0 => "private",
        // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d): judged
        // by the IPv4 address they carry.
        _ if seg[..6] == [0; 6] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let v4 = Ipv4Addr::new(
                (seg[6] >> 8) as u8,
                seg[6] as u8,
                (seg[7] >> 8) as u8,
                seg[7] as u8,
            );
            return v4_kind(v4);
        }
        _ => return None,
    })
}

/// Refuses `addrs` (those of `host`) if any is not allowed.
fn judge(host: &str, addrs: &[IpAddr], allow_private: bool) -> Result<(), AddressError> {
    if allow_private {
        return Ok(());
    }
    match addrs
        .iter()
        .find_map(|ip| special_kind(*ip).map(|k| (*ip, k)))
    {
        Some((ip, kind)) => Err(AddressError::NotAllowed {
            host: host.to_owned(),
            ip,
            kind,
        }),
        None => Ok(()),
    }
}

/// Resolves `host` (any port) through the system resolver.
async fn lookup(host: &str) -> Result<Vec<SocketAddr>, AddressError> {
    let unresolvable = |reason: String| AddressError::Unresolvable {
        host: host.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| unresolvable(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(unresolvable("no addresses".into()));
    }
    Ok(addrs)
}

/// Checks the addresses `url` would reach against the rules: a literal
/// address as it is, a name by resolving it.
pub async fn check(url: &WebhookUrl, allow_private: bool) -> Result<(), AddressError> {
    let host_str = url.url().host_str().unwrap_or_default().to_owned();
    let addrs: Vec<IpAddr> = match url.url().host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => {
            if allow_private {
                // Nothing to refuse; an unresolvable name fails at delivery.
                return Ok(());
            }
            lookup(name).await?.into_iter().map(|a| a.ip()).collect()
        }
        None => Vec::new(),
    };
    judge(&host_str, &addrs, allow_private)
}

/// The webhook client's resolver: the system's, with the address rules
/// applied to what it returns.
pub struct CheckedResolver {
    pub allow_private: bool,
}

impl CheckedResolver {
    pub fn new(allow_private: bool) -> Arc<Self> {
        Arc::new(Self { allow_private })
    }
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str();
            let addrs = lookup(host).await?;
            let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
            judge(host, &ips, allow_private)?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<&'static str> {
        special_kind(s.parse().unwrap())
    }

    #[test]
    fn special_addresses_are_named() {
        for (ip, k) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private (shared)"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
        ] {
            assert_eq!(kind(ip), Some(k), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        assert!(WebhookUrl::parse("https://hooks.example.com/x?y=1").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/").is_ok());
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "not a url",
            "",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "javascript:alert(1)",
        ] {
            let e = WebhookUrl::parse(bad).unwrap_err();
            assert_eq!(e.field, "webhook_url", "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert!(WebhookUrl::parse(&long).is_err());
    }

    #[actix_web::test]
    async fn literal_and_named_addresses_are_checked_unless_allowed() {
        for raw in [
            "http://127.0.0.1:1/",
            "http://[::1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest",
            "http://localhost:1/",
            // The URL parser reads these forms as IPv4 too.
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let url = WebhookUrl::parse(raw).unwrap();
            let err = check(&url, false).await.unwrap_err();
            assert!(
                matches!(err, AddressError::NotAllowed { .. }),
                "{raw}: {err}"
            );
            assert!(check(&url, true).await.is_ok(), "{raw}");
        }
        // No traffic: only literal public addresses are checked here.
        let public = WebhookUrl::parse("https://93.184.216.34/hook").unwrap();
        assert!(check(&public, false).await.is_ok());
    }

    #[actix_web::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        use reqwest::dns::Resolve;
        let strict = CheckedResolver::new(false);
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(strict.resolve(name).await.is_err());
        let lax = CheckedResolver::new(true);
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = lax.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
