//! The canonical loyalty event: the 19 event kinds with their display names (SPEC.md §2) and
//! the JSON envelope the loyalty backend posts. Shared by the host (ingest validation) and the
//! guest SDK (plugins parse the same model), so the catalogue exists exactly once; so do the
//! rules of the request contract both sides check ([`RESERVED_HEADERS`], [`dot_segment`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

macro_rules! event_kinds {
    ($($variant:ident => $key:literal, $display:literal;)+) => {
        /// A realistic example of each kind (`samples/<key>.json`): for tests, dry runs, and
        /// the admin's Test button.
        const SAMPLES: &[&str] = &[$(include_str!(concat!("../samples/", $key, ".json")),)+];

        /// One of the canonical event types.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($variant,)+
        }

        impl EventKind {
            /// Every kind, in the order of the product documentation.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)+];

            /// The wire key, e.g. `seeds.earned.order`.
            pub const fn key(self) -> &'static str {
                match self { $(EventKind::$variant => $key,)+ }
            }

            /// A realistic example event of this kind, as JSON text.
            pub fn sample_json(self) -> &'static str {
                SAMPLES[self as usize]
            }

            /// The human name platforms show, e.g. `Seeds Earned Order`.
            pub const fn display_name(self) -> &'static str {
                match self { $(EventKind::$variant => $display,)+ }
            }
        }

        impl FromStr for EventKind {
            type Err = UnknownEventKind;

            fn from_str(key: &str) -> Result<Self, Self::Err> {
                match key {
                    $($key => Ok(EventKind::$variant),)+
                    _ => Err(UnknownEventKind(key.to_owned())),
                }
            }
        }
    };
}

event_kinds! {
    SeedsEarnedOrder => "seeds.earned.order", "Seeds Earned Order";
    SeedsEarnedVisit => "seeds.earned.visit", "Seeds Earned Visit";
    SeedsEarnedReview => "seeds.earned.review", "Seeds Earned Review";
    SeedsEarnedReferral => "seeds.earned.referral", "Seeds Earned Referral";
    SeedsEarnedSocialShare => "seeds.earned.social_share", "Seeds Earned Social Share";
    SeedsEarnedBonus => "seeds.earned.bonus", "Seeds Earned Bonus";
    TierChanged => "tier.changed", "Tier Changed";
    ReviewSubmitted => "review.submitted", "Review Submitted";
    ReviewApproved => "review.approved", "Review Approved";
    ReviewRejected => "review.rejected", "Review Rejected";
    GiftCardEarned => "gift_card.earned", "Gift Card Earned";
    GiftCardClaimed => "gift_card.claimed", "Gift Card Claimed";
    StoreCreditEarned => "store_credit.earned", "Store Credit Earned";
    StoreCreditClaimed => "store_credit.claimed", "Store Credit Claimed";
    EcoProductAwarded => "eco_product.awarded", "Eco Product Awarded";
    EcoTreePlanted => "eco.tree_planted", "Eco Tree Planted";
    ReferralGenerated => "referral.generated", "Referral Generated";
    ReferralVisit => "referral.visit", "Referral Visit";
    ReferralSuccessful => "referral.successful", "Referral Successful";
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.key())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        key.parse().map_err(serde::de::Error::custom)
    }
}

/// An event key that is not one of the 19 canonical kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEventKind(pub String);

impl fmt::Display for UnknownEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown event type `{}`; valid types are: ", self.0)?;
        for (i, kind) in EventKind::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(kind.key())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownEventKind {}

/// Request headers that frame or route a request, or belong to one hop of it: the HTTP
/// layer sets them (`Content-Length` from the body actually sent, `Host` from the URL), so
/// neither a plugin nor an integration's settings may. A plugin request naming one is
/// refused by the host. Compare case-insensitively ([`is_reserved_header`]).
pub const RESERVED_HEADERS: &[&str] = &[
    "Connection",
    "Content-Length",
    "Expect",
    "Host",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
];

/// Whether a header name is one of the [`RESERVED_HEADERS`].
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name.trim()))
}

/// The first dot segment (`.`, `..`, or a percent-encoded form of them) in the path of a URL
/// as written, if any. URL parsing removes dot segments (and the segment before `..`), even
/// percent-encoded ones, so a request whose URL has one would go to another path than the one
/// written: the host refuses such a request, and a plugin should refuse the event first.
pub fn dot_segment(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split('/').skip(1).find(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// The customer an event is about. Email is absent for anonymous customers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Kept as text: Shopify ids exceed what JSON numbers carry safely in every client.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub shopify_customer_id: Option<String>,
    /// Fields this version does not know about are kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A canonical event as ingested: the envelope plus the event's own fields at top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUID; assigned by the host when the sender leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub event: EventKind,
    /// RFC 3339 in UTC, kept as sent.
    pub timestamp: String,
    #[serde(default)]
    pub customer: Customer,
    /// The event's own fields (amount, balance, tier, …) and any extra ones, in order.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Customer {
    /// The email, when there is a non-blank one.
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref().filter(|e| !e.trim().is_empty())
    }
}

impl Event {
    /// Parses an event from JSON text, naming what is wrong when it cannot.
    pub fn from_json(text: &str) -> Result<Event, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// One of the event's own top-level fields.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "shopify_customer_id must be a string or a number, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_nineteen_kinds_and_keys_round_trip() {
        assert_eq!(EventKind::ALL.len(), 19);
        for kind in EventKind::ALL {
            assert_eq!(kind.key().parse::<EventKind>(), Ok(*kind));
        }
        assert_eq!(EventKind::EcoTreePlanted.display_name(), "Eco Tree Planted");
    }

    /// Found by the fuzz suite: without serde_json's `float_roundtrip`, a float parsed and
    /// printed again could come back a different number, so an event passed through Canopy
    /// would not be kept exactly as sent.
    #[test]
    fn numbers_survive_a_round_trip_exactly() {
        // The value the fuzz suite found, as it generated it (an f64 printed by serde_json).
        let found: f64 = -4.340932873422909e224;
        let text = serde_json::json!({
            "event": "seeds.earned.order", "timestamp": "2026-02-06T14:30:00Z",
            "amount": {"event": [found]}, "y": 0.1, "z": 89.99
        })
        .to_string();
        let event = Event::from_json(&text).unwrap();
        assert_eq!(
            event.field("amount").unwrap()["event"][0].as_f64(),
            Some(found)
        );
        let again = Event::from_json(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn every_kind_has_a_sample_of_that_kind() {
        for kind in EventKind::ALL {
            let event = Event::from_json(kind.sample_json()).unwrap();
            assert_eq!(event.event, *kind);
            assert!(event.id.is_some() && event.customer.email.is_some());
        }
    }

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        assert_eq!(dot_segment("https://x.test/hook/../x"), Some(".."));
        assert_eq!(dot_segment("https://x.test/hook/%2E%2e"), Some("%2E%2e"));
        assert_eq!(dot_segment("https://x.test/hook/.%2E/"), Some(".%2E"));
        assert_eq!(dot_segment("https://x.test/hook/./x"), Some("."));
        assert_eq!(dot_segment("https://x.test/a?b=/..#/.."), None);
        assert_eq!(dot_segment("https://x.test"), None);
        assert_eq!(dot_segment("https://x.test/...x/..a/%2E%2E%2E"), None);
        assert_eq!(dot_segment("https://x.test/jane.smith/"), None);
        assert!(is_reserved_header("content-length") && is_reserved_header(" Host"));
        assert!(!is_reserved_header("X-Content-Length"));
    }

    #[test]
    fn unknown_key_names_the_valid_ones() {
        let err = "seeds.lost".parse::<EventKind>().unwrap_err().to_string();
        assert!(err.starts_with("unknown event type `seeds.lost`"), "{err}");
        assert!(err.contains("referral.successful"), "{err}");
    }

    #[test]
    fn parses_the_seed_example_and_keeps_extra_fields() {
        let event = Event::from_json(
            r#"{"event":"seeds.earned.order","timestamp":"2026-02-06T14:30:00.000Z",
            "customer":{"email":"jane@example.com","first_name":"Jane","shopify_customer_id":7891234567890,"vip":true},
            "amount":50,"order_id":"6012345678901","balance":350,"tier":"Silver","custom":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(event.event, EventKind::SeedsEarnedOrder);
        assert_eq!(
            event.customer.shopify_customer_id.as_deref(),
            Some("7891234567890")
        );
        assert_eq!(event.customer.extra["vip"], Value::Bool(true));
        assert_eq!(event.field("amount"), Some(&Value::from(50)));
        assert_eq!(event.field("custom"), Some(&serde_json::json!({"a":1})));
        let keys: Vec<_> = event.fields.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["amount", "order_id", "balance", "tier", "custom"],
            "in the order sent"
        );
    }

    /// The rules of the envelope's named fields, and of the others: which errors, which order,
    /// which value of a repeated field (ingest answers with these errors; plugins rely on the
    /// order).
    #[test]
    fn named_fields_are_checked_and_other_fields_kept_in_order() {
        let err = |text: &str| Event::from_json(text).unwrap_err().to_string();
        assert!(err(r#"{"timestamp":"t"}"#).starts_with("missing field `event`"));
        assert!(err(r#"{"event":"tier.changed"}"#).starts_with("missing field `timestamp`"));
        assert!(
            err(r#"{"event":"tier.changed","timestamp":"t","event":"tier.changed"}"#)
                .starts_with("duplicate field `event`")
        );
        assert!(
            err(r#"{"event":"tier.changed","timestamp":"t","customer":{"email":"a","email":"b"}}"#)
                .starts_with("duplicate field `email`")
        );
        assert!(
            err(r#"{"event":"tier.changed","timestamp":"t","customer":null}"#)
                .contains("expected struct Customer")
        );
        assert!(err(r#"{"event":"seeds.lost","timestamp":"t"}"#).contains("unknown event type"));
        assert!(err("[]").contains("expected struct Event"));
        assert!(
            err(r#"{"event":"tier.changed","timestamp":"t","customer":{"shopify_customer_id":true}}"#)
                .contains("shopify_customer_id must be a string or a number")
        );

        let event = Event::from_json(
            r#"{"a":1,"event":"tier.changed","id":null,"b":{"c":[2.50,98765432109876543210987]},"timestamp":"t","a":3,
            "customer":{"x":1,"shopify_customer_id":123456789012345678901234567890,"x":2}}"#,
        )
        .unwrap();
        assert_eq!(event.id, None);
        let keys: Vec<_> = event.fields.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(event.fields["a"], Value::from(3));
        assert_eq!(
            event.fields["b"].to_string(),
            r#"{"c":[2.50,98765432109876543210987]}"#
        );
        assert_eq!(event.customer.extra["x"], Value::from(2));
        assert_eq!(
            event.customer.shopify_customer_id.as_deref(),
            Some("123456789012345678901234567890")
        );
    }
}
