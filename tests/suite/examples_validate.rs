//! Every config shipped in `examples/` and `config/` passes `sluice validate`, so the docs
//! cannot rot. Talks to nothing but the `sluice` binary.

use crate::common;

#[test]
fn every_example_and_the_default_config_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 4, "examples/ holds the documented pipelines");
    paths.push(root.join("config/sluice.yaml"));
    for path in paths {
        let out = common::sluice()
            .args(["validate", "--no-environment"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
