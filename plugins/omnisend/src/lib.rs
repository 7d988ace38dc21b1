//! Omnisend destination: each loyalty event becomes an Omnisend customer event named by the
//! event's display name, on the contact identified by the customer's email (SPEC.md §3,
//! seed 000). Two API shapes, chosen by the `api` setting:
//!
//! - `v5` (default): `POST https://api.omnisend.com/v5/events`, `X-API-KEY: <key>`;
//! - `versioned`: `POST https://api.omnisend.com/api/events`,
//!   `Authorization: Omnisend-API-Key <key>` and `Omnisend-Version: <api_version>`.

use canopy_plugin_sdk::{
    Config, ConfigError, Destination, Event, IncomingResponse, Info, Map, OutgoingRequest, Refusal,
    Request, Setting, SettingSpec, Value, Verdict, json, platform_verdict, retry,
};

pub struct Omnisend;

const API_KEY: &str = "api_key";
const API: &str = "api";
const API_VERSION: &str = "api_version";
const DEFAULT_API_VERSION: &str = "2026-03-15";
const V5_URL: &str = "https://api.omnisend.com/v5/events";
const VERSIONED_URL: &str = "https://api.omnisend.com/api/events";

fn settings() -> Vec<SettingSpec> {
    vec![
        Setting::secret(API_KEY, "API key")
            .required()
            .describe("Omnisend → Store settings → API keys → Create API key")
            .build(),
        Setting::choice(API, "API", &["v5", "versioned"])
            .describe("`v5`: the v5 Events API; `versioned`: the date-versioned API")
            .default_value(json!("v5"))
            .build(),
        Setting::text(API_VERSION, "API version")
            .describe("Sent as Omnisend-Version with the versioned API (YYYY-MM-DD)")
            .default_value(json!(DEFAULT_API_VERSION))
            .build(),
    ]
}

fn body(event: &Event, email: &str) -> Value {
    let customer = &event.customer;
    let mut contact = Map::new();
    contact.insert("email".into(), json!(email));
    if let Some(first) = &customer.first_name {
        contact.insert("firstName".into(), json!(first));
    }
    if let Some(last) = &customer.last_name {
        contact.insert("lastName".into(), json!(last));
    }
    let mut properties: Map<String, Value> = event.fields.clone();
    properties.insert("event_type".into(), json!(event.event.key()));
    if let Some(id) = &customer.shopify_customer_id {
        properties.insert("shopify_customer_id".into(), json!(id));
    }
    let mut body = Map::new();
    body.insert("eventName".into(), json!(event.event.display_name()));
    body.insert("origin".into(), json!("api"));
    if let Some(id) = &event.id {
        body.insert("eventID".into(), json!(id));
    }
    body.insert("eventTime".into(), json!(event.timestamp));
    body.insert("contact".into(), Value::Object(contact));
    body.insert("properties".into(), Value::Object(properties));
    Value::Object(body)
}

impl Destination for Omnisend {
    fn describe() -> Info {
        Info::new("omnisend", "Omnisend", env!("CARGO_PKG_VERSION"))
            .description(
                "Sends loyalty events to Omnisend as customer events for automations and segments",
            )
            .allowed_hosts(["api.omnisend.com"])
            .settings(settings())
            // Omnisend allows 400 requests per minute per brand.
            .rate_limit(400, 60)
    }

    fn validate_config(config: &Config) -> Vec<ConfigError> {
        let mut errors = config.missing_required(&settings());
        if let Some(api) = config.text(API)
            && api != "v5"
            && api != "versioned"
        {
            errors.push(Config::error(
                API,
                format!("API must be `v5` or `versioned`, not `{api}`"),
            ));
        }
        errors
    }

    fn transform(event: &Event, config: &Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        let Some(email) = event.customer.email() else {
            return Err(Refusal::Skip("Omnisend requires a customer email".into()));
        };
        if !config.has_secret(API_KEY) {
            return Err(Refusal::InvalidConfig("API key is required".into()));
        }
        let request = match config.text_or(API, "v5") {
            "versioned" => Request::post(VERSIONED_URL)
                .secret_header("Authorization", "Omnisend-API-Key ", API_KEY)
                .header(
                    "Omnisend-Version",
                    config.text_or(API_VERSION, DEFAULT_API_VERSION),
                ),
            _ => Request::post(V5_URL).secret_header("X-API-KEY", "", API_KEY),
        };
        let request = request
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .json(&body(event, email));
        Ok(vec![request.build()])
    }

    fn interpret(response: &IncomingResponse) -> Verdict {
        match platform_verdict(response, "Omnisend", "invalid Omnisend API key") {
            Verdict::Retry(advice) if response.status == 429 => retry(
                "Omnisend rate limit reached (400 requests per minute)",
                advice.after_seconds,
            ),
            verdict => verdict,
        }
    }
}

canopy_plugin_sdk::export_destination!(Omnisend);
