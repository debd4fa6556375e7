//! The files under `packaging/`: the configs they ship pass `sluice validate` (and their
//! `tests:` pass `sluice test`), the systemd
//! unit is hardened and starts what the .deb installs, and — when `cargo deb` is installed —
//! the .deb holds the binary, the unit and the default config. Talks to the `sluice` binary,
//! and to cargo-deb/dpkg-deb when present.

mod common;
use common::sluice;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validates(path: &Path) {
    let out = sluice()
        .args(["validate", "--no-environment"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_packaged_default_config_validates() {
    validates(&root().join("packaging/sluice.yaml"));
}

#[test]
fn every_config_embedded_in_the_kubernetes_manifests_validates() {
    let dir = tempfile::tempdir().unwrap();
    let mut found = 0;
    for manifest in ["daemonset.yaml", "sidecar.yaml"] {
        let text =
            std::fs::read_to_string(root().join("packaging/kubernetes").join(manifest)).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(document).unwrap();
            if value["kind"] != "ConfigMap" {
                continue;
            }
            let config = value["data"]["sluice.yaml"].as_str().unwrap();
            let path = dir.path().join(format!("{manifest}-{found}.yaml"));
            std::fs::write(&path, config).unwrap();
            validates(&path);
            if config.contains("\ntests:") {
                let out = sluice().arg("test").arg(&path).output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{manifest}: {stdout}");
                assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
            }
            found += 1;
        }
    }
    assert_eq!(found, 2, "one config per manifest");
}

#[test]
fn the_systemd_unit_is_hardened_and_runs_the_installed_binary() {
    let unit = std::fs::read_to_string(root().join("packaging/systemd/sluice.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/sluice run --config /etc/sluice/sluice.yaml",
        "DynamicUser=yes",
        "StateDirectory=sluice",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing `{line}`");
    }
}

#[test]
fn the_deb_holds_the_binary_the_unit_and_the_config_when_cargo_deb_is_installed() {
    let available = std::process::Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("cargo-deb is not installed (cargo install cargo-deb): .deb not built");
        return;
    }
    let out = std::process::Command::new("cargo")
        .args(["deb", "--locked"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let listing = std::process::Command::new("dpkg-deb")
        .args(["-c", &deb])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "./usr/bin/sluice",
        "./lib/systemd/system/sluice.service",
        "./etc/sluice/sluice.yaml",
    ] {
        assert!(listing.contains(path), "{path} in {listing}");
    }
}
