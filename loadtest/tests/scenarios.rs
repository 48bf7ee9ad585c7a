//! Every shipped scenario file parses and makes a valid run configuration, so they never rot.

use roost_loadtest::config::RunConfig;
use roost_loadtest::config::RunOptions;
use roost_loadtest::scenario::Scenario;

#[test]
fn shipped_scenarios_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("scenarios dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let options = RunOptions {
            admin_password: "x".into(),
            default_prefix: "lt".into(),
            fail_on_correctness: true,
            ..RunOptions::default()
        };
        RunConfig::build(scenario, options).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 5, "expected the standard scenarios, found {seen}");
}
