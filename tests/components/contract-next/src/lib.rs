//! A plugin built against a newer, compatible contract: its `plugin` interface is
//! `canopy:destination/plugin@0.1.1` and has a function 0.1.0 does not know. Under semver a
//! host that speaks 0.1.0 loads it and calls the functions it knows (what a plugin author
//! gets when the contract gains a function in a patch or minor release and they rebuild).
//! The types are 0.1.0's, taken from the host's `wit/`.

wit_bindgen::generate!({
    inline: "
        package canopy:destination@0.1.1;
        interface plugin {
            use canopy:destination/types@0.1.0.{
                plugin-info, config, config-error, outgoing-request, refusal,
                incoming-response, verdict,
            };
            describe: func() -> plugin-info;
            validate-config: func(config: config) -> list<config-error>;
            transform: func(event: string, config: config) -> result<list<outgoing-request>, refusal>;
            interpret: func(response: incoming-response) -> verdict;
            /// New in 0.1.1: a host that speaks 0.1.0 never calls it.
            contract-notes: func() -> string;
        }
        world destination {
            import canopy:destination/host@0.1.0;
            export plugin;
        }
    ",
    path: "../../../wit/0.1",
    generate_all,
});

use canopy::destination0_1_0::types::{
    Config, ConfigError, IncomingResponse, Method, OutgoingRequest, PluginInfo, Refusal,
    SettingKind, SettingSpec, Verdict,
};

struct ContractNext;

impl exports::canopy::destination0_1_1::plugin::Guest for ContractNext {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "contract-next".into(),
            name: "Contract 0.1.1".into(),
            version: "1.0.0".into(),
            description: "Built against canopy:destination@0.1.1".into(),
            events: vec!["*".into()],
            allowed_hosts: vec!["settings:url".into()],
            settings: vec![SettingSpec {
                name: "url".into(),
                label: "URL".into(),
                description: String::new(),
                kind: SettingKind::Url,
                required: true,
                secret: false,
                default_value: None,
                options: Vec::new(),
            }],
            rate_limit: None,
        }
    }

    fn validate_config(_: Config) -> Vec<ConfigError> {
        Vec::new()
    }

    fn transform(event: String, config: Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        // The URL is the one setting; a JSON string without escapes is enough here.
        let url = config
            .settings
            .split("\"url\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| Refusal::InvalidConfig("url is required".into()))?;
        Ok(vec![OutgoingRequest {
            method: Method::Post,
            url: url.to_owned(),
            headers: Vec::new(),
            body: event.into_bytes(),
            signatures: Vec::new(),
        }])
    }

    fn interpret(response: IncomingResponse) -> Verdict {
        match response.status {
            200..=299 => Verdict::Delivered,
            status => Verdict::Failed(format!("HTTP {status}")),
        }
    }

    fn contract_notes() -> String {
        "0.1.1".into()
    }
}

export!(ContractNext);
