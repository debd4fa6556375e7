//! Link options for the agent's binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        // Relative relocations packed as DT_RELR bitmaps instead of 24-byte RELA entries:
        // the binary's ~170k relocations shrink from 4 MiB, which the dynamic loader reads
        // (and so keeps resident) at every start, to a few KiB. The agent stays a PIE, with
        // ASLR. Needs binutils >= 2.38 or lld >= 15 to link and glibc >= 2.36 to run; GNU
        // ld emits DT_RELR only when the C library it links against provides it.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
