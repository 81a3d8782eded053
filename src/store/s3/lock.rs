//! The writer's lock of a store in a bucket: the object `.gmat-lock` under the store's prefix,
//! holding who writes it. On disk, `flock` does this and dies with its process; a bucket has no
//! such thing, so the lock is a lease:
//!
//! * it is created with a conditional put (`If-None-Match: *`): of two imports racing for the
//!   prefix, one gets "already exists"; on a server that ignores the condition (Garage 2.x),
//!   each writer reads the lock back after [`SETTLE`] and the one whose token is not there
//!   gives up;
//! * the holder rewrites it every [`HEARTBEAT`] and checks that it is still its own (an import
//!   that finds another's token stops before writing its manifest);
//! * a lock not renewed for [`STALE`], or held by a process of this host that no longer runs,
//!   belongs to an interrupted import: the next import over the prefix takes it over (and
//!   resumes), after saying so.
//!
//! Readers (export, verify, inspect, `--base`) refuse a store whose live lock is present.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{Bucket, Created};

/// The lock object's name under the store's prefix.
pub const LOCK: &str = ".gmat-lock";
/// How often the holder renews the lock.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A lock not renewed for this long is abandoned.
pub const STALE: Duration = Duration::from_secs(60);
/// How long a new holder waits before reading its lock back.
const SETTLE: Duration = Duration::from_millis(300);

/// What the lock object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Unique per run.
    pub token: String,
    /// Seconds since the epoch when the import started.
    pub started: u64,
}

/// Another writer's lock found on the prefix, and whether it is still alive.
pub struct Found {
    pub holder: Option<Holder>,
    pub live: bool,
    /// Seconds since it was last renewed.
    pub age: u64,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The lock on `prefix` (the store's key), if any.
pub fn find(bucket: &Bucket, prefix: &str) -> Result<Option<Found>> {
    let key = format!("{prefix}/{LOCK}");
    let Some(meta) = bucket.head(&key)? else {
        return Ok(None);
    };
    let holder: Option<Holder> = bucket
        .get(&key)?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let age = (chrono_now() - meta.last_modified.timestamp()).max(0) as u64;
    let dead_here = holder
        .as_ref()
        .is_some_and(|h| h.host == hostname() && h.pid != std::process::id() && !pid_alive(h.pid));
    Ok(Some(Found {
        live: age < STALE.as_secs() && !dead_here,
        holder,
        age,
    }))
}

fn chrono_now() -> i64 {
    now_secs() as i64
}

impl Found {
    /// Who holds it, for messages.
    pub fn who(&self) -> String {
        match &self.holder {
            Some(h) => format!("gmat pid {} on {}", h.pid, h.host),
            None => "an unreadable lock".into(),
        }
    }
}

/// A held lock: renewed on a thread until released.
pub struct Lock {
    bucket: Arc<Bucket>,
    key: String,
    token: String,
    lost: Arc<AtomicBool>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Takes the lock of the store at `prefix`, or fails naming who holds it. `url` names the
/// store in messages.
pub fn acquire(bucket: Arc<Bucket>, prefix: &str, url: &str) -> Result<Lock> {
    let key = format!("{prefix}/{LOCK}");
    if let Some(f) = find(&bucket, prefix)? {
        if f.live {
            bail!(
                "another gmat import ({}) is writing the store {url} (its lock {} was renewed {}s ago); wait for it to finish. If it was killed, run the import again once the lock is {}s old, and it resumes",
                f.who(),
                bucket.url(&key),
                f.age,
                STALE.as_secs()
            );
        }
        eprintln!(
            "note: {url} was left by an interrupted import ({}); taking its lock over and resuming",
            f.who()
        );
        bucket.delete(&key)?;
    }
    let token = uuid::Uuid::new_v4().to_string();
    let holder = Holder {
        host: hostname(),
        pid: std::process::id(),
        token: token.clone(),
        started: now_secs(),
    };
    let body = serde_json::to_vec(&holder)?;
    if bucket.put_new(&key, body.clone())? == Created::AlreadyExists {
        bail!(
            "another gmat import has just started writing the store {url}; wait for it to finish"
        );
    }
    std::thread::sleep(SETTLE);
    if !still_ours(&bucket, &key, &token)? {
        bail!(
            "another gmat import has just started writing the store {url}; wait for it to finish"
        );
    }
    let lost = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = {
        let (bucket, key, token, lost) = (bucket.clone(), key.clone(), token.clone(), lost.clone());
        std::thread::spawn(move || loop {
            match stopped.recv_timeout(HEARTBEAT) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            match still_ours(&bucket, &key, &token) {
                Ok(true) => {
                    // A failed renewal is retried at the next beat; STALE allows several.
                    let _ = bucket.put(&key, body.clone());
                }
                Ok(false) => {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(_) => {}
            }
        })
    };
    Ok(Lock {
        bucket,
        key,
        token,
        lost,
        stop: Some(stop),
        thread: Some(thread),
    })
}

fn still_ours(bucket: &Bucket, key: &str, token: &str) -> Result<bool> {
    let holder: Option<Holder> = bucket
        .get(key)?
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(holder.is_some_and(|h| h.token == token))
}

impl Lock {
    /// Fails if another writer has taken the lock meanwhile (checked before the manifest).
    pub fn check(&self, url: &str) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) || !still_ours(&self.bucket, &self.key, &self.token)? {
            bail!(
                "another gmat import took over the store {url} while this one was writing it (was this one paused for over {}s?); nothing was committed: run the import again once the other has finished",
                STALE.as_secs()
            );
        }
        Ok(())
    }

    /// Stops renewing and deletes the lock (if it is still ours).
    pub fn release(mut self) -> Result<()> {
        self.stop_thread();
        if still_ours(&self.bucket, &self.key, &self.token)? {
            self.bucket.delete(&self.key)?;
        }
        Ok(())
    }

    fn stop_thread(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // An import that failed: the lock goes, what was uploaded stays for the next run to
        // resume from.
        self.stop_thread();
        if let Ok(true) = still_ours(&self.bucket, &self.key, &self.token) {
            let _ = self.bucket.delete(&self.key);
        }
    }
}
