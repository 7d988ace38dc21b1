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
/// link-local, shared (CGNAT), unspecified, broadcast, multicast or documentation ranges.
/// An IPv6 address that carries an IPv4 address — mapped, compatible, NAT64, 6to4, Teredo —
/// is judged by the IPv4 address it leads to, since that is where its packets end up.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            let embedded = embedded_ipv4(v6);
            if embedded.is_empty() {
                is_internal_v6(v6)
            } else {
                embedded.into_iter().any(is_internal_v4)
            }
        }
    }
}

/// The IPv4 addresses an IPv6 address leads to, by the transition mechanisms that embed one:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (deprecated), NAT64
/// `64:ff9b::a.b.c.d` (RFC 6052), 6to4 `2002:aabb:ccdd::/48` (RFC 3056) and Teredo
/// `2001:0::/32` (RFC 4380: the server's address in bits 32–63, the client's inverted in the
/// last 32 bits; both count).
fn embedded_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return vec![mapped];
    }
    if let Some(compatible) = ipv4_compatible(ip) {
        return vec![compatible];
    }
    match (s[0], s[1], s[2]) {
        // NAT64 well-known prefix 64:ff9b::/96.
        (0x0064, 0xff9b, _) if s[2..6].iter().all(|x| *x == 0) => vec![v4(s[6], s[7])],
        (0x2002, _, _) => vec![v4(s[1], s[2])],
        (0x2001, 0x0000, _) => vec![v4(s[2], s[3]), v4(!s[6], !s[7])],
        _ => Vec::new(),
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
        // Local-use NAT64 64:ff9b:1::/48 (RFC 8215): where the IPv4 address sits in it is the
        // operator's choice, so the whole prefix is treated as internal.
        || (first == 0x0064 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 0x0001)
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
        // IPv6 forms that lead to an internal IPv4 address.
        for embedded in [
            "64:ff9b::7f00:1",                      // NAT64 of 127.0.0.1
            "64:ff9b::a9fe:a9fe",                   // NAT64 of 169.254.169.254
            "64:ff9b:1::a00:1",                     // local-use NAT64
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2002:c0a8:101::1",                     // 6to4 of 192.168.1.1
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1
            "2001:0:a00:1::1",                      // Teredo, server 10.0.0.1
        ] {
            assert!(
                is_internal(embedded.parse().unwrap()),
                "{embedded} leads to an internal address"
            );
        }
        for public in [
            "64:ff9b::808:808",                     // NAT64 of 8.8.8.8
            "2002:808:808::1",                      // 6to4 of 8.8.8.8
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo, client 8.8.8.8
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
