//! Making a written tensor file durable and visible: `fsync`, then rename from its temporary
//! name. A tensor file appears under its final name only once its bytes are on disk, so an
//! interrupted import never leaves a torn file that a resumed import would keep.
//!
//! [`CommitNow`] does it at once; [`BackgroundCommit`] hands it to a thread, so that waiting for
//! the disk overlaps encoding the next tensors; its [`BackgroundCommit::finish`] must return
//! before the manifest is written.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};

/// Makes a completely written temporary file durable and renames it to its final path.
pub trait Commit: Sync {
    fn commit(&self, file: File, tmp: PathBuf, path: PathBuf) -> Result<()>;
}

fn commit_now(file: File, tmp: &PathBuf, path: &PathBuf) -> Result<()> {
    let done = file
        .sync_data()
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(tmp, path)
                .with_context(|| format!("cannot rename {} into place", tmp.display()))
        });
    if done.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    done
}

/// Commits in the calling thread.
pub struct CommitNow;

impl Commit for CommitNow {
    fn commit(&self, file: File, tmp: PathBuf, path: PathBuf) -> Result<()> {
        commit_now(file, &tmp, &path)
    }
}

/// Commits on a background thread, in the order given; see the module documentation.
pub struct BackgroundCommit {
    jobs: Mutex<Option<Sender<(File, PathBuf, PathBuf)>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl BackgroundCommit {
    pub fn start() -> Self {
        let (jobs, queue) = mpsc::channel::<(File, PathBuf, PathBuf)>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut first_error = None;
            for (file, tmp, path) in queue {
                if first_error.is_some() {
                    // Keep nothing half-done after a failure: the import fails anyway.
                    let _ = std::fs::remove_file(&tmp);
                    continue;
                }
                if let Err(e) = commit_now(file, &tmp, &path) {
                    first_error = Some(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        });
        BackgroundCommit {
            jobs: Mutex::new(Some(jobs)),
            thread: Some(thread),
        }
    }

    /// Waits until every file handed over is committed; returns the first failure.
    pub fn finish(mut self) -> Result<()> {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the file committer panicked"))?,
            None => Ok(()),
        }
    }
}

impl Commit for BackgroundCommit {
    fn commit(&self, file: File, tmp: PathBuf, path: PathBuf) -> Result<()> {
        let sent = self
            .jobs
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|j| j.send((file, tmp, path)).is_ok()));
        match sent {
            Some(true) => Ok(()),
            _ => Err(anyhow!("the file committer has stopped")),
        }
    }
}

impl Drop for BackgroundCommit {
    fn drop(&mut self) {
        // Not finished (an error elsewhere): let the thread drain and end; nothing waits for it.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_appear_under_their_final_names_once_finished() {
        let dir = tempfile::tempdir().unwrap();
        let c = BackgroundCommit::start();
        for i in 0..20 {
            let tmp = dir.path().join(format!("{i}.partial"));
            let mut f = File::create(&tmp).unwrap();
            f.write_all(&[i as u8; 100]).unwrap();
            c.commit(f, tmp, dir.path().join(format!("{i}"))).unwrap();
        }
        c.finish().unwrap();
        for i in 0..20 {
            assert_eq!(
                std::fs::read(dir.path().join(format!("{i}"))).unwrap(),
                vec![i as u8; 100]
            );
            assert!(!dir.path().join(format!("{i}.partial")).exists());
        }
    }

    #[test]
    fn a_failed_rename_is_reported_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let c = BackgroundCommit::start();
        let tmp = dir.path().join("a.partial");
        let f = File::create(&tmp).unwrap();
        let target = dir.path().join("missing-dir").join("a");
        c.commit(f, tmp.clone(), target).unwrap();
        let msg = format!("{:#}", c.finish().unwrap_err());
        assert!(msg.contains("cannot rename"), "{msg}");
        assert!(!tmp.exists());
    }
}
