//! Hot swap: calls running while a new version is activated complete on the version they
//! started with; calls after it use the new version; warm instances of the old one go.

use std::sync::{Arc, Barrier};

use canopy::runtime::{PluginConfig, PluginRegistry, Scope};
use canopy_test_support::{ECHO_V1, ECHO_V2, SAMPLE_EVENT};
use serde_json::json;

use crate::{load, test_limits};

fn version_sent(plugin: &canopy::runtime::Plugin, config: &PluginConfig, scope: &str) -> String {
    let call = plugin
        .transform(Scope::Integration(scope), SAMPLE_EVENT, config)
        .expect("call completes");
    let request = &call.value.expect("not refused")[0];
    request
        .headers
        .iter()
        .find(|h| h.name == "X-Plugin-Version")
        .expect("version header")
        .redacted_value()
}

#[test]
fn activation_is_atomic_and_in_flight_calls_finish_on_their_version() {
    let runtime = canopy::runtime::Runtime::new(canopy::runtime::Limits {
        fuel_per_call: Some(canopy::runtime::DEFAULT_FUEL_PER_CALL),
        ..test_limits()
    })
    .unwrap();
    let registry = Arc::new(PluginRegistry::new());
    assert!(registry.activate(load(&runtime, ECHO_V1)).is_none());
    let v2 = load(&runtime, ECHO_V2);
    assert_eq!(v2.id(), "echo");

    // Each call burns a few million iterations so that calls are running during activation.
    let slow = PluginConfig {
        settings: json!({"spin": 3_000_000}),
        secrets_present: vec![],
    };
    const IN_FLIGHT: usize = 6;
    let started = Arc::new(Barrier::new(IN_FLIGHT + 1));
    let handles: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let registry = registry.clone();
            let started = started.clone();
            let slow = slow.clone();
            std::thread::spawn(move || {
                let plugin = registry.get("echo").unwrap();
                let looked_up = plugin.info().version.clone();
                started.wait();
                (looked_up, version_sent(&plugin, &slow, &format!("i-{i}")))
            })
        })
        .collect();

    started.wait();
    let previous = registry.activate(v2).expect("v1 was active");
    assert_eq!(previous.info().version, "1.0.0");

    for handle in handles {
        let (looked_up, sent) = handle.join().expect("no call panicked");
        assert_eq!(looked_up, "1.0.0");
        assert_eq!(sent, "1.0.0", "a call that started on v1 finishes on v1");
    }
    // v1's warm instances were dropped, not kept for a version no longer active.
    drop(previous);
    assert_eq!(runtime.warm_instances(), 0);

    let fast = PluginConfig::default();
    for i in 0..4 {
        let plugin = registry.get("echo").unwrap();
        assert_eq!(version_sent(&plugin, &fast, &format!("i-{i}")), "2.0.0");
    }
    assert_eq!(registry.list().len(), 1);
    assert!(registry.remove("echo").is_some());
    assert!(registry.get("echo").is_none());
    assert_eq!(runtime.warm_instances(), 0);
}
