//! The key layout of the embedded store (format 2, the same on both engines): one keyspace, keys prefixed by kind. Shop ids
//! never contain a NUL byte, so `shop ‖ 0` ends a shop id inside a key; ids are 16 bytes,
//! times 8 bytes big-endian, so keys sort by them.
//!
//! | prefix | key | value |
//! | --- | --- | --- |
//! | `S` | shop id | [`Shop`] |
//! | `T` | token hash (hex) | [`ShopToken`] |
//! | `t` | shop ‖ 0 ‖ token id | token hash (tokens by shop) |
//! | `E` | event id | [`EventRecord`] |
//! | `B` | event id | the event's JSON text |
//! | `R` | received ms ‖ event id | — (events by age, for the purge) |
//! | `I` | shop ‖ 0 ‖ integration id | [`Integration`] |
//! | `D` | delivery id (UUIDv7, so by creation time) | [`Delivery`] |
//! | `A` | delivery id ‖ attempt number | [`Attempt`] |
//! | `Q` | integration id ‖ due ms ‖ delivery id | — (its queue: pending and retrying, at the due time; a delivery a worker holds keeps its entry, the lease being in memory) |
//! | `N` | head due ms ‖ integration id | shop (integrations with queued work, by their earliest entry) |
//! | `n` | integration id | head due ms (where its `N` entry is) |
//! | `L` | integration id ‖ delivery id | lease end ms: written by versions before leases moved to memory, cleared at open |
//! | `P` | integration id ‖ delivery id | — (paused) |
//! | `d` | shop ‖ 0 ‖ delivery id | — (the shop's log) |
//! | `i` | integration id ‖ delivery id | — (log filter) |
//! | `e` | shop ‖ 0 ‖ event key ‖ 0 ‖ delivery id | — (log filter) |
//! | `s` | shop ‖ 0 ‖ status ‖ delivery id | — (log filter) |
//! | `c` | shop ‖ 0 ‖ lowercased email or name ‖ 0 ‖ delivery id | — (log filter) |
//! | `H` | integration id ‖ bucket start ms | [`AttemptStats`] |
//! | `h` | integration id | [`LastOutcomes`] |
//! | `V` | plugin id ‖ 0 ‖ version number | [`PluginVersion`] |
//! | `W` | component digest | component bytes |
//! | `M` | name | metadata (`store-format`, active plugin versions `plugin-active:<id>`, …) |

use uuid::Uuid;

use crate::model::{Delivery, DeliveryStatus, Timestamp};

pub const SHOP: u8 = b'S';
pub const TOKEN: u8 = b'T';
pub const TOKEN_BY_SHOP: u8 = b't';
pub const EVENT: u8 = b'E';
pub const EVENT_JSON: u8 = b'B';
pub const RECEIVED: u8 = b'R';
pub const INTEGRATION: u8 = b'I';
pub const DELIVERY: u8 = b'D';
pub const ATTEMPT: u8 = b'A';
pub const QUEUE: u8 = b'Q';
pub const READY: u8 = b'N';
pub const HEAD: u8 = b'n';
pub const LEASE: u8 = b'L';
pub const PAUSED: u8 = b'P';
pub const BY_SHOP: u8 = b'd';
pub const BY_INTEGRATION: u8 = b'i';
pub const BY_EVENT: u8 = b'e';
pub const BY_STATUS: u8 = b's';
pub const BY_CUSTOMER: u8 = b'c';
pub const STATS: u8 = b'H';
pub const LAST: u8 = b'h';
pub const META: u8 = b'M';
pub const PLUGIN_VERSION: u8 = b'V';
pub const COMPONENT: u8 = b'W';

/// The format this code writes; see `migrate` for the ones before.
pub const FORMAT: &str = "2";
pub const FORMAT_META: &str = "store-format";
pub const ACTIVE_PREFIX: &str = "plugin-active:";
pub const REMOVED_PREFIX: &str = "plugin-removed:";

pub fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

pub fn concat(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        k.extend_from_slice(part);
    }
    k
}

/// `prefix ‖ shop ‖ 0`: the start of every key of a shop under `prefix`.
pub fn shop_prefix(prefix: u8, shop: &str) -> Vec<u8> {
    concat(&[&[prefix], shop.as_bytes(), &[0]])
}

pub fn integration_key(shop: &str, id: Uuid) -> Vec<u8> {
    concat(&[&shop_prefix(INTEGRATION, shop), id.as_bytes()])
}

pub fn token_by_shop_key(shop: &str, id: Uuid) -> Vec<u8> {
    concat(&[&shop_prefix(TOKEN_BY_SHOP, shop), id.as_bytes()])
}

pub fn queue_prefix(integration: Uuid) -> Vec<u8> {
    key(QUEUE, integration.as_bytes())
}

pub fn queue_entry(integration: Uuid, at: Timestamp, delivery: Uuid) -> Vec<u8> {
    concat(&[
        &[QUEUE],
        integration.as_bytes(),
        &at.0.to_be_bytes(),
        delivery.as_bytes(),
    ])
}

/// The due time in a queue entry.
pub fn queue_entry_time(k: &[u8]) -> Timestamp {
    Timestamp(u64::from_be_bytes(k[17..25].try_into().unwrap_or_default()))
}

pub fn ready_key(head: Timestamp, integration: Uuid) -> Vec<u8> {
    concat(&[&[READY], &head.0.to_be_bytes(), integration.as_bytes()])
}

pub fn lease_key(integration: Uuid, delivery: Uuid) -> Vec<u8> {
    concat(&[&[LEASE], integration.as_bytes(), delivery.as_bytes()])
}

pub fn stats_key(integration: Uuid, bucket: Timestamp) -> Vec<u8> {
    concat(&[&[STATS], integration.as_bytes(), &bucket.0.to_be_bytes()])
}

pub fn customer_prefix(shop: &str, term: &str) -> Vec<u8> {
    concat(&[
        &shop_prefix(BY_CUSTOMER, shop),
        term.trim().to_lowercase().as_bytes(),
        &[0],
    ])
}

pub fn event_prefix(shop: &str, event: &str) -> Vec<u8> {
    concat(&[&shop_prefix(BY_EVENT, shop), event.as_bytes(), &[0]])
}

pub fn status_prefix(shop: &str, status: DeliveryStatus) -> Vec<u8> {
    concat(&[&shop_prefix(BY_STATUS, shop), &[status.code()]])
}

/// The delivery's place in its integration's queue, if it is queued.
pub fn queue_key(d: &Delivery) -> Option<Vec<u8>> {
    d.queue_time()
        .map(|at| queue_entry(d.integration_id, at, d.id))
}

/// What the customer filter finds a delivery by: its email and name, trimmed, lower case.
pub fn customer_terms(d: &Delivery) -> Vec<String> {
    let mut terms: Vec<String> = [&d.customer_email, &d.customer_name]
        .into_iter()
        .flatten()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    terms.dedup();
    terms
}

/// Every key that exists because of this delivery, besides its own, with its value.
pub fn derived_keys(d: &Delivery) -> Vec<(Vec<u8>, Vec<u8>)> {
    let id = d.id.as_bytes();
    let none = Vec::new;
    let mut keys = vec![
        (concat(&[&shop_prefix(BY_SHOP, &d.shop), id]), none()),
        (
            concat(&[&[BY_INTEGRATION], d.integration_id.as_bytes(), id]),
            none(),
        ),
        (concat(&[&event_prefix(&d.shop, &d.event), id]), none()),
        (concat(&[&status_prefix(&d.shop, d.status), id]), none()),
    ];
    for term in customer_terms(d) {
        keys.push((concat(&[&customer_prefix(&d.shop, &term), id]), none()));
    }
    if let Some(queued) = queue_key(d) {
        keys.push((queued, none()));
        if let Some(until) = d.lease_until {
            keys.push((
                lease_key(d.integration_id, d.id),
                until.0.to_be_bytes().to_vec(),
            ));
        }
    }
    if d.status == DeliveryStatus::Paused {
        keys.push((
            concat(&[&[PAUSED], d.integration_id.as_bytes(), id]),
            none(),
        ));
    }
    keys
}

pub fn plugin_prefix(plugin: &str) -> Vec<u8> {
    concat(&[&[PLUGIN_VERSION], plugin.as_bytes(), &[0]])
}

pub fn plugin_version_key(plugin: &str, number: u32) -> Vec<u8> {
    concat(&[&plugin_prefix(plugin), &number.to_be_bytes()])
}

pub fn active_key(plugin: &str) -> Vec<u8> {
    key(META, format!("{ACTIVE_PREFIX}{plugin}").as_bytes())
}

pub fn removed_key(plugin: &str) -> Vec<u8> {
    key(META, format!("{REMOVED_PREFIX}{plugin}").as_bytes())
}

/// The id (delivery, event, integration) that ends a key.
pub fn trailing_id(k: &[u8]) -> Uuid {
    let start = k.len().saturating_sub(16);
    Uuid::from_slice(&k[start..]).unwrap_or_default()
}

/// The id at `offset` in a key.
pub fn id_at(k: &[u8], offset: usize) -> Uuid {
    k.get(offset..offset + 16)
        .and_then(|b| Uuid::from_slice(b).ok())
        .unwrap_or_default()
}

/// The time (8 bytes) at `offset` in a key.
pub fn time_at(k: &[u8], offset: usize) -> Timestamp {
    Timestamp(
        k.get(offset..offset + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or_default(),
    )
}

/// The key just after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}
