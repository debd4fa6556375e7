//! The files under `packaging/`: the configs they ship pass `sluice validate` (and their
//! `tests:` pass `sluice test`), the systemd
//! unit is hardened and starts what the .deb installs, and the .deb (built by cargo-deb, which
//! scripts/cargo-deb.sh installs) holds the binary, the unit and the default config as a
//! conffile, and its binary validates its config. Talks to the `sluice` binary, cargo-deb and
//! dpkg-deb.

use crate::common::sluice;
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

/// The cargo-deb binary: `SLUICE_CARGO_DEB` (set by scripts/test.sh), the cache
/// scripts/cargo-deb.sh fills, or `cargo-deb` on PATH. `None` only with `SLUICE_SKIP_DEB=1`.
fn cargo_deb() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_CARGO_DEB") {
        return Some(PathBuf::from(path));
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/sluice/cargo-deb-3.8.0/bin/cargo-deb"));
    if let Some(path) = cached.filter(|p| p.exists()) {
        return Some(path);
    }
    let on_path = std::process::Command::new("cargo-deb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some(PathBuf::from("cargo-deb"));
    }
    if std::env::var("SLUICE_SKIP_DEB").as_deref() == Ok("1") {
        eprintln!("SLUICE_SKIP_DEB=1: the .deb is not built");
        return None;
    }
    panic!(
        "cargo-deb not found: run scripts/test.sh (which installs it once with \
         scripts/cargo-deb.sh), set SLUICE_CARGO_DEB=/path/to/cargo-deb, or set \
         SLUICE_SKIP_DEB=1 to skip this test locally"
    );
}

#[test]
fn the_deb_installs_the_binary_the_unit_and_the_config_and_its_binary_runs() {
    let Some(cargo_deb) = cargo_deb() else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    // Packages the binary this test run built (dev profile, stripped), not a release build:
    // what is checked here is the packaging, and a release build would take minutes.
    let out = std::process::Command::new(&cargo_deb)
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--output",
        ])
        .arg(out_dir.path())
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
    let dpkg_deb = |args: &[&str]| {
        let out = std::process::Command::new("dpkg-deb")
            .args(args)
            .output()
            .expect("dpkg-deb runs");
        assert!(out.status.success(), "dpkg-deb {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = dpkg_deb(&["-c", &deb]);
    for path in [
        "./usr/bin/sluice",
        "./lib/systemd/system/sluice.service",
        "./etc/sluice/sluice.yaml",
    ] {
        assert!(listing.contains(path), "{path} in {listing}");
    }
    let control = dpkg_deb(&["-f", &deb, "Package", "Depends"]);
    assert!(control.contains("Package: sluice"), "{control}");
    assert!(
        control.contains("libc6"),
        "shared-library dependencies found: {control}"
    );
    let conffiles = dpkg_deb(&["-I", &deb, "conffiles"]);
    assert_eq!(
        conffiles.trim(),
        "/etc/sluice/sluice.yaml",
        "upgrades keep the user's config"
    );

    // What the package installs works together: its binary validates its config.
    let root_fs = out_dir.path().join("root");
    dpkg_deb(&["-x", &deb, root_fs.to_str().unwrap()]);
    let validate = std::process::Command::new(root_fs.join("usr/bin/sluice"))
        .args(["validate", "--no-environment"])
        .arg(root_fs.join("etc/sluice/sluice.yaml"))
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
}

/// `build.rs` links the agent with packed relative relocations (DT_RELR): the dynamic loader
/// then reads a few KiB of relocations at start instead of 4 MiB, which stayed resident.
/// Reads the binary's dynamic section with binutils' `readelf`, which the GNU linker ships with.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_binary_packs_its_relative_relocations() {
    let out = std::process::Command::new("readelf")
        .args(["--dynamic", "--wide", env!("CARGO_BIN_EXE_sluice")])
        .output()
        .expect("readelf (binutils) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert!(dynamic.contains("(RELR)"), "no DT_RELR entry:\n{dynamic}");
    let rela_bytes: u64 = dynamic
        .lines()
        .find(|l| l.contains("(RELASZ)"))
        .and_then(|l| l.split_whitespace().find_map(|word| word.parse().ok()))
        .expect("RELASZ in the dynamic section");
    assert!(
        rela_bytes < 64 * 1024,
        "{rela_bytes} bytes of RELA relocations: the relative ones are not packed\n{dynamic}"
    );
}
