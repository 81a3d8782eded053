//! How malloc may hold memory: one arena, and large blocks always mapped on their own.
//!
//! glibc gives threads their own arenas (up to eight per core), and memory freed into an arena
//! stays with it. gmat's buffers are allocated on one thread and freed on another (the I/O
//! threads of a bucket store, rayon's workers), so with the default every arena ends up
//! holding a few freed buffers of its own: a bucket export measured 124 MiB peak memory against
//! 95 MiB with one arena and the same time (bench/s3.sh). The quantizers do not allocate in
//! their loops, so fewer arenas cost no speed (a Q4_K_M export measured the same with 1, 2 and
//! the default).
//!
//! Blocks of [`MMAP_FROM`] bytes and more are mapped and unmapped on their own. By default
//! glibc raises that threshold to the largest block freed so far (up to 32 MiB), after which
//! such blocks come from the heap and their pages stay resident when freed: a bucket import
//! (whose upload parts are 6-8 MiB) measured 107-118 MiB peak memory against 73-78 MiB with
//! the threshold fixed at 1 MiB, and 70-73 MiB for the same import to disk; exports and imports
//! on disk took the same time either way (bench/s3.sh, bench/run.sh). The big buffers that are
//! reused (decode windows, write buffers) live in pools, so they are not mapped again and again.

/// Large blocks are mapped on their own from this size on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_FROM: i32 = 1 << 20;

/// Limits the process to one arena and maps large blocks on their own. Call first thing in
/// `main`, before any thread starts.
pub fn limit() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any thread
        // exists. Its result (0 on failure) leaves the default in place, which is harmless.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_FROM);
        }
    }
}
