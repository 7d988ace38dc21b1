//! Where an outgoing request may go (SPEC.md §5): the destination must be one of the hosts
//! its plugin declared, and by default must not resolve to a private, loopback, link-local or
//! otherwise internal address — a plugin, or an admin-entered webhook URL, must not be able to
//! reach the network Canopy runs in. An explicit setting allows internal addresses for local
//! development and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

/// Whether `host` is allowed by a plugin's declared patterns: an exact name
/// (`a.klaviyo.com`), `*.domain` (exactly one more label: `shop.myshopify.com`, not
/// `a.b.myshopify.com` nor `myshopify.com`), or `settings:<name>` — the host of the URL held
/// in that setting (a generic webhook's configured URL). Names compare case-insensitively.
pub fn host_allowed(patterns: &[String], settings: &Value, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    patterns.iter().any(|pattern| {
        if let Some(setting) = pattern.strip_prefix("settings:") {
            return settings
                .get(setting)
                .and_then(Value::as_str)
                .and_then(|url| url::Url::parse(url.trim()).ok())
                .and_then(|url| {
                    url.host_str()
                        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                })
                .is_some_and(|configured| configured == host);
        }
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            None => host == pattern,
        }
    })
}

/// Whether an address is internal: loopback, private (RFC 1918, IPv6 unique local),
/// link-local, shared (CGNAT), unspecified, broadcast, multicast or documentation ranges,
/// and IPv4-mapped or -compatible IPv6 forms of those.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| ipv4_compatible(v6)) {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), RFC 6598
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, RFC 2544
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// `::a.b.c.d` (deprecated IPv4-compatible form), excluding `::` and `::1`.
fn ipv4_compatible(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[..6].iter().all(|x| *x == 0) && (s[6] != 0 || s[7] > 1))
        .then(|| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn declared_hosts() {
        let none = json!({});
        let klaviyo = patterns(&["a.klaviyo.com"]);
        assert!(host_allowed(&klaviyo, &none, "a.klaviyo.com"));
        assert!(host_allowed(&klaviyo, &none, "A.Klaviyo.com."));
        assert!(!host_allowed(&klaviyo, &none, "evil.com"));
        assert!(!host_allowed(&klaviyo, &none, "a.klaviyo.com.evil.com"));

        let shopify = patterns(&["*.myshopify.com"]);
        assert!(host_allowed(&shopify, &none, "green-shop.myshopify.com"));
        assert!(!host_allowed(&shopify, &none, "myshopify.com"));
        assert!(!host_allowed(&shopify, &none, "a.b.myshopify.com"));
        assert!(!host_allowed(&shopify, &none, "green-shopmyshopify.com"));
        assert!(!host_allowed(
            &shopify,
            &none,
            "green-shop.myshopify.com.evil.com"
        ));

        let webhook = patterns(&["settings:url"]);
        let settings = json!({"url": "https://Hooks.Example.com:8443/in/{{ customer.email }}"});
        assert!(host_allowed(&webhook, &settings, "hooks.example.com"));
        assert!(!host_allowed(&webhook, &settings, "other.example.com"));
        assert!(!host_allowed(&webhook, &json!({}), "hooks.example.com"));
        assert!(!host_allowed(
            &webhook,
            &json!({"url": 7}),
            "hooks.example.com"
        ));
    }

    #[test]
    fn internal_addresses() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "255.255.255.255",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "2001:db8::1",
            "192.0.0.8",
            "198.18.0.1",
        ] {
            assert!(
                is_internal(internal.parse().unwrap()),
                "{internal} is internal"
            );
        }
        for public in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public} is public");
        }
    }
}
