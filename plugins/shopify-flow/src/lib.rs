//! Shopify Flow destination: each loyalty event runs the store's Flow trigger through the
//! Admin GraphQL `flowTriggerReceive` mutation (SPEC.md §3, seed 000). The payload is the
//! event flattened into readable keys — `Customer email`, `Event type`, `Amount`, `Product
//! title`… (snake_case → Sentence case, nested objects prefixed by their parent, arrays
//! joined by ", ") — plus the reference key `customer_id` when the Shopify customer id is
//! known. Flow answers 200 even on errors, so `interpret` reads the GraphQL body.

use canopy_plugin_sdk::serde_json;
use canopy_plugin_sdk::{
    Config, ConfigError, Destination, Event, IncomingResponse, Info, Map, OutgoingRequest, Refusal,
    Request, Setting, SettingSpec, Value, Verdict, json, platform_verdict, retry,
};

pub struct ShopifyFlow;

const SHOP: &str = "shop_domain";
const API_VERSION: &str = "api_version";
const DEFAULT_API_VERSION: &str = "2026-04";
const HANDLE: &str = "trigger_handle";
const TOKEN: &str = "access_token";

/// Flow refuses trigger payloads of 1 MB or more.
pub const MAX_PAYLOAD_BYTES: usize = 1_000_000;

const MUTATION: &str = "mutation flowTriggerReceive($handle: String, $payload: JSON) { flowTriggerReceive(handle: $handle, payload: $payload) { userErrors { field message } } }";

fn settings() -> Vec<SettingSpec> {
    vec![
        Setting::text(SHOP, "Shop domain")
            .required()
            .describe("Your store's your-store.myshopify.com domain")
            .build(),
        Setting::text(HANDLE, "Flow trigger handle")
            .required()
            .describe("The handle of the trigger created for LoyaltyTree in Shopify Flow")
            .build(),
        Setting::text(API_VERSION, "Admin API version")
            .describe("Shopify Admin API version (YYYY-MM)")
            .default_value(json!(DEFAULT_API_VERSION))
            .build(),
        Setting::secret(TOKEN, "Admin API access token")
            .required()
            .describe("An Admin API access token of the store's app")
            .build(),
    ]
}

fn valid_shop(shop: &str) -> bool {
    shop.strip_suffix(".myshopify.com").is_some_and(|name| {
        !name.is_empty()
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

fn valid_api_version(version: &str) -> bool {
    let b = version.as_bytes();
    version == "unstable"
        || (b.len() == 7
            && b.iter().enumerate().all(|(i, c)| {
                if i == 4 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            }))
}

/// `order_total` → `Order total`, `share_url` → `Share URL`, with `prefix` in front. Customer
/// fields read the same wherever they appear: `display_name` → `name`,
/// `shopify_customer_id` → `Shopify ID` (`Referred customer Shopify ID`).
fn label(prefix: &str, key: &str) -> String {
    let key = match key {
        "display_name" => "name",
        "shopify_customer_id" => "Shopify_ID",
        other => other,
    };
    let words = key.split('_').filter(|w| !w.is_empty()).map(|w| match w {
        "Shopify" | "ID" => w.to_owned(),
        "id" => "ID".to_owned(),
        "url" => "URL".to_owned(),
        other => other.to_lowercase(),
    });
    let mut text = prefix.to_owned();
    for word in words {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&word);
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Adds `value` under readable keys: objects recurse with their label as prefix, arrays are
/// joined by ", ", nulls are left out.
fn flatten_into(out: &mut Map<String, Value>, prefix: &str, key: &str, value: &Value) {
    let name = label(prefix, key);
    match value {
        Value::Null => {}
        Value::Object(fields) => {
            for (k, v) in fields {
                flatten_into(out, &name, k, v);
            }
        }
        Value::Array(items) => {
            let joined: Vec<String> = items
                .iter()
                .filter(|v| !v.is_null())
                .map(scalar_text)
                .collect();
            out.insert(name, Value::String(joined.join(", ")));
        }
        scalar => {
            out.insert(name, scalar.clone());
        }
    }
}

/// The Flow trigger payload for an event.
pub fn payload(event: &Event) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("Event type".into(), json!(event.event.key()));
    out.insert("Event name".into(), json!(event.event.display_name()));
    if let Some(id) = &event.id {
        out.insert("Event ID".into(), json!(id));
    }
    out.insert("Event time".into(), json!(event.timestamp));
    let customer = &event.customer;
    for (key, value) in [
        ("Customer email", &customer.email),
        ("Customer first name", &customer.first_name),
        ("Customer last name", &customer.last_name),
        ("Customer name", &customer.display_name),
        ("Customer Shopify ID", &customer.shopify_customer_id),
    ] {
        if let Some(value) = value {
            out.insert(key.into(), json!(value));
        }
    }
    for (key, value) in &customer.extra {
        flatten_into(&mut out, "customer", key, value);
    }
    for (key, value) in &event.fields {
        flatten_into(&mut out, "", key, value);
    }
    // Flow's reference field: lets the workflow act on the Shopify customer.
    if let Some(id) = customer
        .shopify_customer_id
        .as_deref()
        .and_then(|id| id.trim().parse::<u64>().ok())
    {
        out.insert("customer_id".into(), json!(id));
    }
    out
}

impl Destination for ShopifyFlow {
    fn describe() -> Info {
        // The Admin API limit is cost-based per app and store; Flow answers THROTTLED, which
        // is retried, so no fixed pace is declared.
        Info::new("shopify-flow", "Shopify Flow", env!("CARGO_PKG_VERSION"))
            .description("Runs a Shopify Flow trigger with each loyalty event's data")
            .allowed_hosts(["*.myshopify.com"])
            .settings(settings())
    }

    fn validate_config(config: &Config) -> Vec<ConfigError> {
        let mut errors = config.missing_required(&settings());
        if let Some(shop) = config.text(SHOP)
            && !valid_shop(shop)
        {
            errors.push(Config::error(
                SHOP,
                format!("Shop domain must look like your-store.myshopify.com, not `{shop}`"),
            ));
        }
        if let Some(version) = config.text(API_VERSION)
            && !valid_api_version(version)
        {
            errors.push(Config::error(
                API_VERSION,
                format!("Admin API version must look like {DEFAULT_API_VERSION}, not `{version}`"),
            ));
        }
        if let Some(handle) = config.text(HANDLE)
            && handle.chars().any(char::is_whitespace)
        {
            errors.push(Config::error(
                HANDLE,
                "Flow trigger handle cannot contain spaces",
            ));
        }
        errors
    }

    fn transform(event: &Event, config: &Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        let invalid = |m: &str| Err(Refusal::InvalidConfig(m.into()));
        let Some(shop) = config.text(SHOP).filter(|s| valid_shop(s)) else {
            return invalid("Shop domain must look like your-store.myshopify.com");
        };
        let Some(handle) = config.text(HANDLE) else {
            return invalid("Flow trigger handle is required");
        };
        if !config.has_secret(TOKEN) {
            return invalid("Admin API access token is required");
        }
        let version = config.text_or(API_VERSION, DEFAULT_API_VERSION);
        let payload = Value::Object(payload(event));
        let size = payload.to_string().len();
        if size >= MAX_PAYLOAD_BYTES {
            return Err(Refusal::InvalidEvent(format!(
                "the Shopify Flow payload is {size} bytes; Flow accepts payloads under 1 MB"
            )));
        }
        let body = json!({
            "query": MUTATION,
            "variables": {"handle": handle, "payload": payload},
        });
        let request = Request::post(format!("https://{shop}/admin/api/{version}/graphql.json"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .secret_header("X-Shopify-Access-Token", "", TOKEN)
            .json(&body);
        Ok(vec![request.build()])
    }

    fn interpret(response: &IncomingResponse) -> Verdict {
        match response.status {
            200 => graphql_verdict(&response.body),
            404 => Verdict::Failed(
                "Shopify answered 404: check the shop domain and API version".into(),
            ),
            _ => platform_verdict(response, "Shopify", "invalid Shopify access token"),
        }
    }
}

/// A 200 is a success only without top-level `errors` and with empty `userErrors`.
fn graphql_verdict(body: &[u8]) -> Verdict {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Failed("Shopify answered 200 with a body that is not JSON".into());
    };
    if let Some(errors) = body.get("errors").filter(|e| !e.is_null()) {
        let list = errors
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![errors.clone()]);
        let throttled = list
            .iter()
            .any(|e| e.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED"));
        if throttled {
            return retry(
                "Shopify throttled the request (THROTTLED)",
                throttle_wait(&body),
            );
        }
        let messages: Vec<String> = list
            .iter()
            .map(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| scalar_text(e), str::to_owned)
            })
            .collect();
        return Verdict::Failed(format!("Shopify GraphQL errors: {}", messages.join("; ")));
    }
    let user_errors = body
        .pointer("/data/flowTriggerReceive/userErrors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if user_errors.is_empty() {
        return Verdict::Delivered;
    }
    let messages: Vec<String> = user_errors
        .iter()
        .map(|e| {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            match e.get("field").and_then(Value::as_array) {
                Some(field) if !field.is_empty() => {
                    let path: Vec<String> = field.iter().map(scalar_text).collect();
                    format!("{}: {message}", path.join("."))
                }
                _ => message.to_owned(),
            }
        })
        .collect();
    Verdict::Failed(format!(
        "Shopify Flow refused the trigger: {}",
        messages.join("; ")
    ))
}

/// Seconds until the cost bucket refills enough for another request, from the throttle
/// status Shopify sends with THROTTLED.
fn throttle_wait(body: &Value) -> Option<u32> {
    let cost = body.pointer("/extensions/cost")?;
    let requested = cost.get("requestedQueryCost")?.as_f64()?;
    let status = cost.get("throttleStatus")?;
    let available = status.get("currentlyAvailable")?.as_f64()?;
    let rate = status.get("restoreRate")?.as_f64()?;
    (rate > 0.0).then(|| ((requested - available).max(0.0) / rate).ceil().max(1.0) as u32)
}

canopy_plugin_sdk::export_destination!(ShopifyFlow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sentence_case() {
        assert_eq!(label("", "order_total"), "Order total");
        assert_eq!(label("", "share_url"), "Share URL");
        assert_eq!(label("Product", "id"), "Product ID");
        assert_eq!(
            label("Referred customer", "first_name"),
            "Referred customer first name"
        );
        assert_eq!(label("", "referred_customer"), "Referred customer");
        assert_eq!(
            label("Referred customer", "display_name"),
            "Referred customer name"
        );
        assert_eq!(
            label("Referred customer", "shopify_customer_id"),
            "Referred customer Shopify ID"
        );
    }

    #[test]
    fn shop_domains_and_versions() {
        assert!(valid_shop("green-shop.myshopify.com"));
        assert!(!valid_shop("green-shop.com"));
        assert!(!valid_shop(".myshopify.com"));
        assert!(!valid_shop("https://green-shop.myshopify.com"));
        assert!(valid_api_version("2026-04") && valid_api_version("unstable"));
        assert!(!valid_api_version("2026-4") && !valid_api_version("latest"));
    }

    #[test]
    fn throttle_wait_from_cost_extension() {
        let body = json!({"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED"}}],
            "extensions":{"cost":{"requestedQueryCost":10,"throttleStatus":{"maximumAvailable":1000.0,"currentlyAvailable":2,"restoreRate":50.0}}}});
        assert_eq!(throttle_wait(&body), Some(1));
        assert_eq!(throttle_wait(&json!({})), None);
    }
}
