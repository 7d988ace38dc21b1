//! Klaviyo destination: each loyalty event becomes a Klaviyo event (Events API,
//! `POST https://a.klaviyo.com/api/events`, JSON:API body), with the customer's email as the
//! profile identifier and the event's display name as the metric (SPEC.md §3, seed 000).
//!
//! `value` is the event's seed figure as a number — `amount` for `seeds.*`, `seeds_awarded`
//! or `seeds_spent` where that is the figure — or, for gift cards and store credit, the money
//! amount with `value_currency`. Events with no such figure (tier changes, reviews, trees,
//! referral links) carry no `value`.

use canopy_plugin_sdk::json::number;
use canopy_plugin_sdk::{
    Config, ConfigError, Destination, Event, EventKind, IncomingResponse, Info, Map,
    OutgoingRequest, Refusal, Request, Setting, SettingSpec, Value, Verdict, json,
    platform_verdict,
};

pub struct Klaviyo;

const EVENTS_URL: &str = "https://a.klaviyo.com/api/events";
const API_KEY: &str = "api_key";
const REVISION: &str = "revision";
const DEFAULT_REVISION: &str = "2026-07-15";
const JSON_API: &str = "application/vnd.api+json";

fn settings() -> Vec<SettingSpec> {
    vec![
        Setting::secret(API_KEY, "Private API key")
            .required()
            .describe("Klaviyo → Settings → API keys → Create Private API Key (events: write)")
            .build(),
        Setting::text(REVISION, "API revision")
            .describe("The Klaviyo API revision requests are pinned to (YYYY-MM-DD)")
            .default_value(json!(DEFAULT_REVISION))
            .build(),
    ]
}

/// The number Klaviyo shows as the event's value, and its currency when it is money.
fn value(event: &Event) -> Option<(Value, Option<&str>)> {
    use EventKind::*;
    let field = |name| event.field(name).and_then(number);
    match event.event {
        SeedsEarnedOrder
        | SeedsEarnedVisit
        | SeedsEarnedReview
        | SeedsEarnedReferral
        | SeedsEarnedSocialShare
        | SeedsEarnedBonus => field("amount").map(|v| (v, None)),
        ReviewApproved | ReferralVisit | ReferralSuccessful => {
            field("seeds_awarded").map(|v| (v, None))
        }
        EcoProductAwarded => field("seeds_spent").map(|v| (v, None)),
        GiftCardEarned | GiftCardClaimed | StoreCreditEarned | StoreCreditClaimed => {
            let currency = event.field("currency").and_then(Value::as_str);
            field("amount").map(|v| (v, currency))
        }
        TierChanged | ReviewSubmitted | ReviewRejected | EcoTreePlanted | ReferralGenerated => None,
    }
}

fn body(event: &Event, email: &str) -> Value {
    let mut properties: Map<String, Value> = event.fields.clone();
    properties.insert("event_type".into(), json!(event.event.key()));

    let customer = &event.customer;
    let mut profile = Map::new();
    profile.insert("email".into(), json!(email));
    for (key, value) in [
        ("first_name", &customer.first_name),
        ("last_name", &customer.last_name),
        ("external_id", &customer.shopify_customer_id),
    ] {
        if let Some(value) = value {
            profile.insert(key.into(), json!(value));
        }
    }

    let mut attributes = Map::new();
    attributes.insert("properties".into(), Value::Object(properties));
    attributes.insert("time".into(), json!(event.timestamp));
    if let Some((value, currency)) = value(event) {
        attributes.insert("value".into(), value);
        if let Some(currency) = currency {
            attributes.insert("value_currency".into(), json!(currency));
        }
    }
    if let Some(id) = &event.id {
        attributes.insert("unique_id".into(), json!(id));
    }
    attributes.insert(
        "metric".into(),
        json!({"data": {"type": "metric", "attributes": {"name": event.event.display_name()}}}),
    );
    attributes.insert(
        "profile".into(),
        json!({"data": {"type": "profile", "attributes": profile}}),
    );
    json!({"data": {"type": "event", "attributes": attributes}})
}

fn valid_revision(revision: &str) -> bool {
    let date = revision.split_once('.').map_or(revision, |(date, _)| date);
    let bytes = date.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

impl Destination for Klaviyo {
    fn describe() -> Info {
        Info::new("klaviyo", "Klaviyo", env!("CARGO_PKG_VERSION"))
            .description(
                "Sends loyalty events to Klaviyo as custom metrics on the customer's profile",
            )
            .allowed_hosts(["a.klaviyo.com"])
            .settings(settings())
            // Events API steady-state limit: 3,500 requests per minute (burst 350/s).
            .rate_limit(3500, 60)
    }

    fn validate_config(config: &Config) -> Vec<ConfigError> {
        let mut errors = config.missing_required(&settings());
        if let Some(revision) = config.text(REVISION)
            && !valid_revision(revision)
        {
            errors.push(Config::error(
                REVISION,
                format!("API revision `{revision}` must be a date like {DEFAULT_REVISION}"),
            ));
        }
        errors
    }

    fn transform(event: &Event, config: &Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        let Some(email) = event.customer.email() else {
            return Err(Refusal::Skip("Klaviyo requires a customer email".into()));
        };
        if !config.has_secret(API_KEY) {
            return Err(Refusal::InvalidConfig("Private API key is required".into()));
        }
        let request = Request::post(EVENTS_URL)
            .secret_header("Authorization", "Klaviyo-API-Key ", API_KEY)
            .header("revision", config.text_or(REVISION, DEFAULT_REVISION))
            .header("accept", JSON_API)
            .header("content-type", JSON_API)
            .json(&body(event, email));
        Ok(vec![request.build()])
    }

    fn interpret(response: &IncomingResponse) -> Verdict {
        platform_verdict(response, "Klaviyo", "invalid Klaviyo API key")
    }
}

canopy_plugin_sdk::export_destination!(Klaviyo);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions() {
        assert!(valid_revision("2026-07-15"));
        assert!(valid_revision("2026-07-15.pre"));
        assert!(!valid_revision("2026-7-15"));
        assert!(!valid_revision("latest"));
    }
}
