//! A well-behaved destination whose output names its own version (`CARGO_PKG_VERSION`). The
//! same source builds as `echo` 1.0.0 and `echo-v2` 2.0.0 for the hot-swap test (2.0.0 no
//! longer takes `referral.visit`). The `spin`
//! setting burns that many iterations first, so that calls overlap an activation.

use canopy_plugin_sdk::{
    Config, ConfigError, Destination, Event, Info, OutgoingRequest, Refusal, Request,
};

pub struct Echo;

const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Destination for Echo {
    fn describe() -> Info {
        let info = Info::new("echo", "Echo", VERSION)
            .description("Sends the event back, labelled with the plugin version")
            .allowed_hosts(["echo.test"]);
        if VERSION.starts_with("1.") {
            info
        } else {
            // Version 2 stops taking one type, so fan-out to `*` integrations can be tested,
            // and declares it needs more memory than the default (contract 0.2's needs).
            info.needs_memory_mib(96).events(
                canopy_plugin_sdk::EventKind::ALL
                    .iter()
                    .map(|k| k.key())
                    .filter(|key| *key != "referral.visit"),
            )
        }
    }

    fn validate_config(_config: &Config) -> Vec<ConfigError> {
        Vec::new()
    }

    fn transform(event: &Event, config: &Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        let spin = config.get("spin").and_then(|v| v.as_u64()).unwrap_or(0);
        let mut acc = 0u64;
        for i in 0..spin {
            acc = std::hint::black_box(acc.wrapping_add(i));
        }
        let mut request = Request::post(format!("https://echo.test/v{VERSION}"))
            .header("X-Plugin-Version", VERSION);
        // Event data in a header, as platforms' plugins do: whether the host can send it
        // depends on the event.
        if let Some(name) = &event.customer.first_name {
            request = request.header("X-Customer", name.clone());
        }
        Ok(vec![request.json(event).build()])
    }
}

canopy_plugin_sdk::export_destination!(Echo);
