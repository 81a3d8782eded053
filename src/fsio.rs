//! Files as gmat reads and writes them.
//!
//! * Inputs are opened without blocking and refused unless they are regular files: a FIFO, a
//!   device or a directory where a file is expected is a clear error, never a hang or an
//!   endless read ([`open_input`]). Files that should be small (configs, manifests, tokenizer
//!   and side files) are read with a limit ([`read_limited`]).
//! * Outputs are written under a temporary name that is unique and created exclusively
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`) in the destination folder, then renamed into place
//!   ([`create_temp`]): a symlink planted at a temporary name is never followed, and two runs
//!   never write into one file.
//! * A run that writes a store or an output holds a lock ([`Lock`], `flock`) for its whole
//!   length, so a second writer is refused with a message instead of interleaving its bytes. The
//!   kernel drops the lock when a process ends, so a crashed run never leaves it stuck.
//! * [`Resolved`] turns paths into what they name after symlinks and `..`, so an output that is
//!   one of the inputs (or inside an input store) is refused before any work.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The most gmat reads of a file that should be small: a config, a manifest, an index, a
/// tokenizer or other side file. Real ones are far smaller (a 150k-token tokenizer.json is
/// about 10 MB, the manifest of a 90k-tensor model about 40 MB).
pub const SMALL_FILE_LIMIT: u64 = 256 << 20;

/// The suffix of every temporary file gmat writes.
pub const TEMP_SUFFIX: &str = ".gmat-tmp";

/// What a file system object is, for messages.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading, refusing anything but a regular file (after following symlinks).
/// The open does not block: a FIFO is refused, not waited on.
pub fn open_input(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!(
            "{} is {}, not a regular file",
            path.display(),
            kind_of(meta.file_type())
        );
    }
    // Back to blocking reads (O_NONBLOCK has no effect on regular files, but be plain).
    // SAFETY: fcntl on a file descriptor this function owns.
    unsafe {
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// Reads all of a regular file that should be small, refusing one larger than `limit` bytes
/// with an error naming the file and the limit.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_input(path)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > limit {
        bail!(
            "{} is {} bytes, more than the {} gmat reads for a file of this kind",
            path.display(),
            len,
            human_limit(limit)
        );
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 > limit {
        bail!(
            "{} holds more than the {} gmat reads for a file of this kind",
            path.display(),
            human_limit(limit)
        );
    }
    Ok(buf)
}

/// [`read_limited`] with [`SMALL_FILE_LIMIT`], as UTF-8 text.
pub fn read_small_text(path: &Path) -> Result<String> {
    let bytes = read_limited(path, SMALL_FILE_LIMIT)?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

fn human_limit(limit: u64) -> String {
    if limit >= 1 << 20 && limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{limit} bytes")
    }
}

/// The folder a file `path` goes into (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A unique temporary path beside `target`: `.<name>.<random>.gmat-tmp`.
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    parent_dir(target).join(format!(".{name}.{}{TEMP_SUFFIX}", &tag[..16]))
}

/// Whether `name` is a temporary file gmat writes for the file called `for_name` (any file
/// when `None`).
pub fn is_temp_name(name: &str, for_name: Option<&str>) -> bool {
    let Some(stem) = name
        .strip_suffix(TEMP_SUFFIX)
        .and_then(|s| s.strip_prefix('.'))
    else {
        return false;
    };
    // `<for_name>.<16 hex>`
    let Some((base, tag)) = stem.rsplit_once('.') else {
        return false;
    };
    tag.len() == 16
        && tag.bytes().all(|b| b.is_ascii_hexdigit())
        && for_name.is_none_or(|n| n == base)
}

/// Creates a new, empty temporary file beside `target` (see [`temp_path`]), exclusively and
/// without following symlinks. Returns it and its path; the caller renames it onto `target`
/// when complete, or removes it.
pub fn create_temp(target: &Path) -> Result<(File, PathBuf)> {
    for _ in 0..8 {
        let tmp = temp_path(target);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create a temporary file {}", tmp.display()))
            }
        }
    }
    bail!(
        "cannot create a temporary file beside {}: every name tried exists",
        target.display()
    )
}

/// Asks the kernel to start writing `len` bytes of `file` at `offset` to disk now, without
/// waiting for it. An output is made durable with one `fsync` at the end; on a machine with
/// much memory nothing would reach the disk before it, and that `fsync` would then wait for
/// the whole file (0.15-0.2 s for a 300 MB GGUF here). Started as each buffer lands, the
/// writing overlaps the export and the final `fsync` finds little left. A hint: failures are
/// ignored (the `fsync` reports real ones).
pub fn start_writeback(file: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open.
        let _ = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Asks the kernel to read `file` ahead into the page cache, without waiting: a file about to
/// be read whole (a cache entry) then arrives from disk while the ones before it are copied.
/// A hint: failures are ignored.
pub fn will_need(file: &File) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Writes `bytes` to `target` atomically: a temporary file, synced, renamed into place.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let (mut f, tmp) = create_temp(target)?;
    let done = f
        .write_all(bytes)
        .and_then(|()| f.sync_data())
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, target)
                .with_context(|| format!("cannot move {} into place", tmp.display()))
        });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Removes the temporary files a crashed run left in `dir` (for the file `for_name`, or all).
/// Only call it while holding the lock that covers those files.
pub fn remove_stale_temps(dir: &Path, for_name: Option<&str>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if is_temp_name(&name.to_string_lossy(), for_name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A lock held for a run (`flock`). Dropping it releases it; an output lock also removes its
/// lock file.
pub struct Lock {
    file: File,
    path: PathBuf,
    remove: bool,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.remove {
            // Removed while still held: a waiting process then finds its file gone and retries
            // on a new one (see `lock_output`).
            let _ = std::fs::remove_file(&self.path);
        }
        // SAFETY: unlocking our own descriptor; closing it would do the same.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .mode(0o644)
        .open(path)
}

fn try_flock(f: &File, op: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on an open descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The lock file of an output file: `.<name>.lock` beside it.
pub fn output_lock_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    parent_dir(target).join(format!(".{name}.lock"))
}

/// Locks the output file `target` for this run, or fails at once naming the other writer's
/// lock. The lock file exists only while held.
pub fn lock_output(target: &Path) -> Result<Lock> {
    let path = output_lock_path(target);
    for _ in 0..100 {
        let file = open_lock_file(&path)
            .with_context(|| format!("cannot create the lock file {}", path.display()))?;
        if !try_flock(&file, libc::LOCK_EX)
            .with_context(|| format!("cannot lock {}", path.display()))?
        {
            bail!(
                "another gmat process is writing {} (it holds {}); wait for it to finish, or choose another output",
                target.display(),
                path.display()
            );
        }
        // The holder before us may have removed the file after we opened it: then our lock is
        // on a file nobody else will find, so start again on the current one.
        let ours = file.metadata()?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {
                return Ok(Lock {
                    file,
                    path,
                    remove: true,
                })
            }
            _ => continue,
        }
    }
    bail!(
        "cannot lock {}: its lock file keeps changing",
        path.display()
    )
}

/// The lock file of a store: `model.gmat/.lock` (kept: the folder belongs to gmat).
pub fn store_lock_path(root: &Path) -> PathBuf {
    root.join(".lock")
}

/// Locks a store for writing (an import), or fails at once: while an import writes a store, no
/// other import writes it and no export, verify or `--base` reads it (they hold shared locks,
/// [`lock_store_shared`]).
pub fn lock_store_exclusive(root: &Path) -> Result<Lock> {
    let path = store_lock_path(root);
    let file = open_lock_file(&path)
        .with_context(|| format!("cannot create the lock file {}", path.display()))?;
    if !try_flock(&file, libc::LOCK_EX)
        .with_context(|| format!("cannot lock {}", path.display()))?
    {
        // A writer holds it exclusively, or readers share it: say which.
        let writing = !try_flock(&file, libc::LOCK_SH).unwrap_or(false);
        if writing {
            bail!(
                "another gmat import is writing the store {}; wait for it to finish",
                root.display()
            );
        }
        bail!(
            "the store {} is being read by another gmat process (an export, a verify, or an import using it as --base); wait for it to finish before importing over it",
            root.display()
        );
    }
    Ok(Lock {
        file,
        path,
        remove: false,
    })
}

/// Locks a store for reading for as long as it is open (shared with other readers), or fails at
/// once when an import is writing it. A store gmat cannot create a lock file in (a read-only
/// folder) is read without one: nothing can import into it either.
pub fn lock_store_shared(root: &Path) -> Result<Option<Lock>> {
    let path = store_lock_path(root);
    let file = match open_lock_file(&path) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EROFS | libc::EPERM)
            ) =>
        {
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => f,
                Err(_) => return Ok(None),
            }
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot create the lock file {}", path.display()))
        }
    };
    if !try_flock(&file, libc::LOCK_SH)
        .with_context(|| format!("cannot lock {}", path.display()))?
    {
        bail!(
            "another gmat import is writing the store {}; wait for it to finish",
            root.display()
        );
    }
    Ok(Some(Lock {
        file,
        path,
        remove: false,
    }))
}

/// Whether an import is writing the store at `root` now (its lock is held exclusively).
pub fn store_being_written(root: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(store_lock_path(root))
    else {
        return false;
    };
    matches!(try_flock(&file, libc::LOCK_SH), Ok(false))
}

/// `path` after resolving symlinks and `..`: the longest existing prefix is canonicalized and
/// the rest appended. With `follow_last` false, a final symlink is not followed (a rename
/// replaces the link itself).
pub fn resolve(path: &Path, follow_last: bool) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    if follow_last {
        if let Ok(c) = std::fs::canonicalize(&abs) {
            return c;
        }
    }
    // Canonicalize the parent, keep the last component.
    let (parent, name) = match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
        _ => return std::fs::canonicalize(&abs).unwrap_or(abs),
    };
    let mut rest = vec![name];
    let mut p = parent;
    loop {
        if let Ok(c) = std::fs::canonicalize(&p) {
            let mut out = c;
            for n in rest.iter().rev() {
                if n == ".." {
                    out.pop();
                } else if n != "." {
                    out.push(n);
                }
            }
            return out;
        }
        match (p.parent(), p.file_name()) {
            (Some(pp), Some(n)) => {
                rest.push(n.to_os_string());
                p = pp.to_path_buf();
            }
            _ => return abs,
        }
    }
}

/// The inputs of a run, resolved: folders nothing may be written into (stores) and files
/// nothing may be written over.
#[derive(Default)]
pub struct Inputs {
    dirs: Vec<(PathBuf, String)>,
    files: Vec<(PathBuf, String)>,
}

impl Inputs {
    /// A folder no output may be or be inside of (a store), described as `what`.
    pub fn dir(&mut self, path: &Path, what: impl Into<String>) {
        self.dirs.push((resolve(path, true), what.into()));
    }

    /// A file no output may be, described as `what`.
    pub fn file(&mut self, path: &Path, what: impl Into<String>) {
        self.files.push((resolve(path, true), what.into()));
    }

    /// Refuses `output` (described as `what`, e.g. "-o") when it is one of the inputs or inside
    /// an input folder, or when it is an existing directory, or its folder does not exist.
    pub fn check_output(&self, output: &Path, what: &str) -> Result<()> {
        check_output_file(output, what)?;
        for o in [resolve(output, false), resolve(output, true)] {
            for (d, desc) in &self.dirs {
                if o.starts_with(d) {
                    bail!(
                        "{what} {} is inside {desc} {}: writing there would change an input; choose an output outside it",
                        output.display(),
                        d.display()
                    );
                }
            }
            for (f, desc) in &self.files {
                if &o == f {
                    bail!(
                        "{what} {} is {desc}: writing it would destroy an input; choose another output",
                        output.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Refuses an output folder that is, contains or is inside one of the inputs.
    pub fn check_output_dir(&self, output: &Path, what: &str) -> Result<()> {
        let o = resolve(output, true);
        for (d, desc) in &self.dirs {
            if o.starts_with(d) || d.starts_with(&o) {
                bail!(
                    "{what} {} overlaps {desc} {}; choose a folder apart from it",
                    output.display(),
                    d.display()
                );
            }
        }
        for (f, desc) in &self.files {
            if f.starts_with(&o) {
                bail!(
                    "{what} {} holds {desc} {}; choose a folder apart from the inputs",
                    output.display(),
                    f.display()
                );
            }
        }
        Ok(())
    }
}

/// An output file must not be an existing directory, and its folder must exist.
pub fn check_output_file(output: &Path, what: &str) -> Result<()> {
    if output.as_os_str().is_empty() {
        bail!("{what}: the output path is empty");
    }
    // `x.gguf/` names a folder (the final rename would fail only after all the work), `x/..`
    // no file at all.
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(output.as_os_str());
    if bytes.ends_with(b"/") || output.file_name().is_none() {
        bail!(
            "{what} {} names a folder, not a file; give a file name",
            output.display()
        );
    }
    if let Ok(m) = std::fs::metadata(output) {
        if m.is_dir() {
            bail!(
                "{what} {} is a directory; give a file name",
                output.display()
            );
        }
        if !m.is_file() {
            bail!(
                "{what} {} is {}; give a regular file name",
                output.display(),
                kind_of(m.file_type())
            );
        }
    }
    let dir = parent_dir(output);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!(
            "{what} {}: {} is not a directory",
            output.display(),
            dir.display()
        ),
        Err(e) => bail!(
            "{what} {}: its folder {} does not exist ({e})",
            output.display(),
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_unique_and_recognised() {
        let t = Path::new("/x/model.gguf");
        let (a, b) = (temp_path(t), temp_path(t));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(name, Some("model.gguf")), "{name}");
        assert!(is_temp_name(name, None));
        assert!(!is_temp_name(name, Some("other.gguf")));
        assert!(!is_temp_name("model.gguf", None));
        assert!(!is_temp_name(".model.gguf.xyz.gmat-tmp", None));
    }

    #[test]
    fn temp_files_never_follow_a_planted_symlink() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out.bin");
        let (f, tmp) = create_temp(&target).unwrap();
        drop(f);
        // A symlink in place of the temporary name is refused, not followed.
        std::fs::remove_file(&tmp).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let e = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp);
        assert!(e.is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn inputs_must_be_regular_and_small_reads_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let e = format!("{:#}", open_input(d.path()).unwrap_err());
        assert!(e.contains("is a directory"), "{e}");
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path in our temporary folder.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = format!("{:#}", open_input(&fifo).unwrap_err());
        assert!(e.contains("FIFO"), "{e}");
        let e = format!(
            "{:#}",
            read_limited(Path::new("/dev/zero"), 100).unwrap_err()
        );
        assert!(e.contains("character device"), "{e}");
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        let e = format!("{:#}", read_limited(&big, 100).unwrap_err());
        assert!(e.contains("big") && e.contains("100 bytes"), "{e}");
        assert_eq!(read_limited(&big, 101).unwrap().len(), 101);
    }

    #[test]
    fn a_second_writer_is_refused_and_a_released_lock_is_free() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x.gguf");
        let l = lock_output(&target).unwrap();
        let e = format!("{:#}", lock_output(&target).err().unwrap());
        assert!(e.contains("another gmat process is writing"), "{e}");
        drop(l);
        assert!(!output_lock_path(&target).exists());
        let _l = lock_output(&target).unwrap();
        let s = lock_store_exclusive(d.path()).unwrap();
        assert!(store_being_written(d.path()));
        let e = format!("{:#}", lock_store_exclusive(d.path()).err().unwrap());
        assert!(e.contains("another gmat import is writing"), "{e}");
        let e = format!("{:#}", lock_store_shared(d.path()).err().unwrap());
        assert!(e.contains("another gmat import is writing"), "{e}");
        drop(s);
        assert!(!store_being_written(d.path()));
        // Readers share the store and keep an import out.
        let r1 = lock_store_shared(d.path()).unwrap();
        let r2 = lock_store_shared(d.path()).unwrap();
        let e = format!("{:#}", lock_store_exclusive(d.path()).err().unwrap());
        assert!(e.contains("being read by another gmat process"), "{e}");
        drop((r1, r2));
        let _s = lock_store_exclusive(d.path()).unwrap();
    }

    #[test]
    fn outputs_that_are_inputs_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("st/model.gmat");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("metadata.json"), "{}").unwrap();
        let cfg = d.path().join("c.json");
        std::fs::write(&cfg, "{}").unwrap();
        let mut inputs = Inputs::default();
        inputs.dir(&store, "the store");
        inputs.file(&cfg, "the export config");
        let dotted = d.path().join("st/../st/model.gmat/metadata.json");
        assert!(inputs.check_output(&dotted, "-o").is_err());
        assert!(inputs.check_output(&store.join("new.gguf"), "-o").is_err());
        assert!(inputs.check_output(&cfg, "-o").is_err());
        let link = d.path().join("link.json");
        std::os::unix::fs::symlink(&cfg, &link).unwrap();
        assert!(inputs.check_output(&link, "-o").is_err());
        assert!(inputs.check_output(d.path(), "-o").is_err());
        for bad in ["new.gguf/", "st/..", "/"] {
            let e = format!(
                "{:#}",
                check_output_file(&d.path().join(bad), "-o").unwrap_err()
            );
            assert!(e.contains("names a folder"), "{bad}: {e}");
        }
        assert!(inputs
            .check_output(&d.path().join("nodir/x.gguf"), "-o")
            .is_err());
        inputs
            .check_output(&d.path().join("st/out.gguf"), "-o")
            .unwrap();
        assert!(inputs.check_output_dir(&d.path().join("st"), "-o").is_err());
        inputs.check_output_dir(&d.path().join("o"), "-o").unwrap();
    }
}
