//! Builds every component the tests and benchmarks load — the template plugin, the
//! hostile/test components under `tests/components/`, and the TypeScript and Python plugins
//! (with npm, and with each project's `build.sh` and componentize-py) — once per build, and
//! writes their paths into `components.rs` for `src/lib.rs` to include.

use std::path::Path;

const COMPONENTS: &[(&str, &str, &str)] = &[
    ("TEMPLATE", "canopy-plugin-template", "plugins/template"),
    (
        "HOSTILE",
        "test-component-hostile",
        "tests/components/hostile",
    ),
    (
        "BAD_DESCRIBE",
        "test-component-bad-describe",
        "tests/components/bad-describe",
    ),
    (
        "WRONG_WORLD",
        "test-component-wrong-world",
        "tests/components/wrong-world",
    ),
    (
        "NOT_A_DESTINATION",
        "test-component-not-a-destination",
        "tests/components/not-a-destination",
    ),
    (
        "CONTRACT_NEXT",
        "test-component-contract-next",
        "tests/components/contract-next",
    ),
    ("ECHO_V1", "test-component-echo", "tests/components/echo"),
    (
        "ECHO_V2",
        "test-component-echo-v2",
        "tests/components/echo-v2",
    ),
];

/// TypeScript plugins: (constant, project directory, component name).
const NPM_COMPONENTS: &[(&str, &str, &str)] = &[
    ("TEMPLATE_TS", "plugins/template-ts", "template-ts"),
    ("BRAZE", "plugins/braze", "braze"),
    ("HOSTILE_TS", "tests/components-ts/hostile", "hostile-ts"),
];

/// Python plugins: (constant, project directory, component name).
const PYTHON_COMPONENTS: &[(&str, &str, &str)] = &[
    ("TEMPLATE_PY", "plugins/template-py", "template-py"),
    ("SLACK", "plugins/slack", "slack"),
    ("HOSTILE_PY", "tests/components-py/hostile", "hostile-py"),
];

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir)
        .parent()
        .expect("tests/ is inside the workspace");
    let packages: Vec<(&str, &str)> = COMPONENTS.iter().map(|(_, p, d)| (*p, *d)).collect();
    let built = wasm_build::build(root, &packages);

    let mut code = String::new();
    for ((constant, _, _), component) in COMPONENTS.iter().zip(&built) {
        code.push_str(&format!(
            "/// Path of the `{}` component.\npub const {constant}: &str = {:?};\n",
            component.package,
            component.path.display().to_string()
        ));
    }
    // Plugins in other languages, each built by its own toolchain.
    let npm = NPM_COMPONENTS
        .iter()
        .map(|(constant, dir, name)| (constant, dir, wasm_build::build_npm(root, dir, name)));
    let python = PYTHON_COMPONENTS
        .iter()
        .map(|(constant, dir, name)| (constant, dir, wasm_build::build_python(root, dir, name)));
    for (constant, dir, built) in npm.chain(python) {
        code.push_str(&format!(
            "/// Path of the `{dir}` component; `None` where its toolchain is missing.\n\
             pub const {constant}: Option<&str> = {:?};\n",
            built.map(|path| path.display().to_string())
        ));
    }
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("components.rs"), code).expect("writing components.rs");
}
