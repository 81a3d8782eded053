//! How many malloc arenas the process may use.
//!
//! glibc gives threads their own arenas (up to eight per core), and memory freed into an arena
//! stays with it. gmat's buffers are allocated on one thread and freed on another (the I/O
//! threads of a bucket store, rayon's workers), so with the default every arena ends up
//! holding a few freed buffers of its own: a bucket export measured 124 MiB peak memory against
//! 95 MiB with one arena and the same time (bench/s3.sh). The quantizers do not allocate in
//! their loops, so fewer arenas cost no speed (a Q4_K_M export measured the same with 1, 2 and
//! the default).

/// Limits the process to one arena. Call first thing in `main`, before any thread starts.
pub fn limit() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any thread
        // exists. Its result (0 on failure) leaves the default in place, which is harmless.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
