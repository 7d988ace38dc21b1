//! Template destination — copy this crate to start a new plugin.
//!
//! POSTs the canonical event, as JSON, to the URL in the `url` setting, with an optional
//! bearer token and an optional HMAC signature of the body. It uses every part of the SDK a
//! real destination needs: the settings form, config validation, a skip, secret references,
//! host-side signing, and response interpretation.

use canopy_plugin_sdk::{
    Config, ConfigError, Destination, Event, IncomingResponse, Info, OutgoingRequest, Refusal,
    Request, Setting, Verdict, default_verdict, json,
};

pub struct Template;

const URL: &str = "url";
const TOKEN: &str = "token";
const SIGNING_SECRET: &str = "signing_secret";

fn settings() -> Vec<canopy_plugin_sdk::SettingSpec> {
    vec![
        Setting::url(URL, "Endpoint URL")
            .required()
            .describe("Where events are POSTed, e.g. https://hooks.example.com/loyalty")
            .build(),
        Setting::boolean("require_email", "Only customers with an email")
            .describe("Skip events about anonymous customers")
            .default_value(json!(false))
            .build(),
        Setting::secret(TOKEN, "Bearer token")
            .describe("Sent as `Authorization: Bearer <token>`")
            .build(),
        Setting::secret(SIGNING_SECRET, "Signing secret")
            .describe("Signs the body as `X-Signature: <hex HMAC-SHA256>`")
            .build(),
    ]
}

impl Destination for Template {
    fn describe() -> Info {
        Info::new("template", "Template", env!("CARGO_PKG_VERSION"))
            .description("POSTs the canonical event as JSON to a URL")
            .allowed_hosts([format!("settings:{URL}")])
            .settings(settings())
    }

    fn validate_config(config: &Config) -> Vec<ConfigError> {
        let mut errors = config.missing_required(&settings());
        if let Some(url) = config.text(URL)
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            errors.push(Config::error(
                URL,
                "Endpoint URL must start with https:// or http://",
            ));
        }
        errors
    }

    fn transform(event: &Event, config: &Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        let Some(url) = config.text(URL) else {
            return Err(Refusal::InvalidConfig("Endpoint URL is required".into()));
        };
        let require_email = config.get("require_email").and_then(|v| v.as_bool()) == Some(true);
        if require_email && event.customer.email().is_none() {
            return Err(Refusal::Skip("the customer has no email".into()));
        }
        let mut request = Request::post(url)
            .header("Content-Type", "application/json")
            .header("X-Event-Type", event.event.key())
            .header("X-Event-Name", event.event.display_name())
            .json(event);
        if config.has_secret(TOKEN) {
            request = request.secret_header("Authorization", "Bearer ", TOKEN);
        }
        if config.has_secret(SIGNING_SECRET) {
            request = request.sign_hmac_hex("X-Signature", SIGNING_SECRET);
        }
        Ok(vec![request.build()])
    }

    fn interpret(response: &IncomingResponse) -> Verdict {
        default_verdict(response)
    }
}

canopy_plugin_sdk::export_destination!(Template);
