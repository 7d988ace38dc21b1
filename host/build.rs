//! Builds the four bundled destination plugins from `plugins/` for wasm32-wasip2 and writes
//! `bundled.rs`, which embeds them in the `canopy` binary (`runtime::bundled`).

use std::path::Path;

const BUNDLED: &[(&str, &str)] = &[
    ("canopy-plugin-klaviyo", "plugins/klaviyo"),
    ("canopy-plugin-omnisend", "plugins/omnisend"),
    ("canopy-plugin-shopify-flow", "plugins/shopify-flow"),
    ("canopy-plugin-webhook", "plugins/webhook"),
];

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir)
        .parent()
        .expect("host/ is inside the workspace");
    let built = wasm_build::build(root, BUNDLED);

    let mut code = String::from(
        "/// The bundled plugins: (package, component bytes).\npub const BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for component in &built {
        code.push_str(&format!(
            "    ({:?}, include_bytes!({:?})),\n",
            component.package,
            component.path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("bundled.rs"), code).expect("writing bundled.rs");
}
