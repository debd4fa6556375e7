// mimalloc: event processing allocates many small short-lived values (VRL objects, strings);
// glibc malloc spent ~25% of the remap benchmark in malloc/free, mimalloc roughly halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::resident::set_free_memory_collector(collect_free_pages);
    sluice::cli::main()
}

extern "C" {
    /// mimalloc: returns the calling thread's free pages (with `force`, at once, whatever
    /// their purge delay) and the process's free arena memory to the system.
    fn mi_collect(force: bool);
}

/// What an idle runtime worker calls (`sluice::resident`).
fn collect_free_pages() {
    // SAFETY: mimalloc's own entry point, linked in as the global allocator above; it only
    // touches the calling thread's heap and the allocator's shared arenas, under their locks.
    unsafe { mi_collect(true) }
}

/// Opts the agent out of transparent huge pages, unless `MIMALLOC_ALLOW_THP` says otherwise.
/// Where the kernel's THP mode is `always` (a common default), the first touch of any 2 MiB
/// aligned heap region faults in a whole 2 MiB page: the allocator's arena, buffers and thread
/// stacks each cost 2 MiB of RSS however little they hold. With THP off (measured, README
/// "Performance"): idle RSS 30 -> 22 MiB, the remap pipeline's peak 55 -> 45 MiB, Parquet's
/// 140 -> 112 MiB, CPU unchanged within noise. Sidecars run one agent per pod, so resident
/// memory is what they cost.
///
/// mimalloc reads the option once, when it starts, before `main`, and then disables THP for
/// the process itself (`PR_SET_THP_DISABLE`). So the option is set from a constructor ordered
/// before mimalloc's (priority 101): by its name, which stays stable across mimalloc versions.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00100"]
static WITHOUT_TRANSPARENT_HUGE_PAGES: extern "C" fn() = without_transparent_huge_pages;

#[cfg(target_os = "linux")]
extern "C" fn without_transparent_huge_pages() {
    // SAFETY: constructors run on the one thread there is, before anything reads the
    // environment concurrently; both strings are NUL-terminated literals.
    unsafe {
        libc::setenv(c"MIMALLOC_ALLOW_THP".as_ptr(), c"0".as_ptr(), 0);
    }
}
