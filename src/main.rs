// mimalloc: event processing allocates many small short-lived values (VRL objects, strings);
// glibc malloc spent ~25% of the remap benchmark in malloc/free, mimalloc roughly halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    without_transparent_huge_pages();
    sluice::cli::main()
}

/// Opts this process out of transparent huge pages. Where the kernel's THP mode is `always`
/// (a common default), the first touch of any 2 MiB-aligned heap region faults in a whole
/// 2 MiB page: the allocator's arena, buffers and thread stacks each cost 2 MiB of RSS however
/// little they hold. Measured (README, "Performance"): idle 26.7 -> 21.5 MiB, peak of the
/// remap pipeline 53.5 -> 42.1 MiB, CPU unchanged within noise. Sidecars run one agent per pod,
/// so resident memory is the cost that matters. (mimalloc's `MIMALLOC_ALLOW_THP=0` does the
/// same, but is read before `main`, so it cannot be set from here.)
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
