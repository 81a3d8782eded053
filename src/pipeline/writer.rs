//! Positional writes on a background thread, so that copying finished rows into the output
//! file (a page-cache copy that can cost as much as quantizing Q8_0) overlaps the work on the
//! next rows instead of stalling every core.
//!
//! At most [`IN_FLIGHT`] buffers wait for the writer: memory stays bounded by a few chunks.
//! Buffers come back to the producer for reuse. Writes land at explicit offsets, so the bytes
//! of the file do not depend on when each write happens.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};

use anyhow::{anyhow, Context, Result};

/// Buffers queued for the writer before the producer waits.
const IN_FLIGHT: usize = 2;

/// Sends buffers to a writer thread; see the module documentation.
pub struct BackgroundWriter<'scope> {
    jobs: Option<SyncSender<(Vec<u8>, u64)>>,
    spare: Mutex<Receiver<Vec<u8>>>,
    thread: Option<ScopedJoinHandle<'scope, std::io::Result<()>>>,
}

impl<'scope> BackgroundWriter<'scope> {
    /// Starts the writer thread for `file` inside `scope`.
    pub fn start<'env>(scope: &'scope Scope<'scope, 'env>, file: &'env File) -> Self {
        let (jobs, queue) = mpsc::sync_channel::<(Vec<u8>, u64)>(IN_FLIGHT);
        let (give_back, spare) = mpsc::channel();
        let thread = scope.spawn(move || -> std::io::Result<()> {
            for (buf, at) in queue {
                file.write_all_at(&buf, at)?;
                // The producer may have finished and dropped its end: nothing to reuse then.
                let _ = give_back.send(buf);
            }
            Ok(())
        });
        BackgroundWriter {
            jobs: Some(jobs),
            spare: Mutex::new(spare),
            thread: Some(thread),
        }
    }

    /// An empty buffer, reusing one the writer has finished with when there is one.
    pub fn buffer(&self) -> Vec<u8> {
        let mut b = self
            .spare
            .lock()
            .ok()
            .and_then(|s| s.try_recv().ok())
            .unwrap_or_default();
        b.clear();
        b
    }

    /// Queues `buf` to be written at byte `at`; waits while [`IN_FLIGHT`] buffers are queued.
    pub fn write(&mut self, buf: Vec<u8>, at: u64) -> Result<()> {
        let sent = match &self.jobs {
            Some(jobs) => jobs.send((buf, at)).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped on an error: report it.
            self.finish()
                .and(Err(anyhow!("the output writer stopped unexpectedly")))
        }
    }

    /// Waits for every queued write and returns the first error.
    pub fn finish(&mut self) -> Result<()> {
        self.jobs = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the output writer panicked"))?
                .context("cannot write the output file"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_land_at_their_offsets_whatever_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        std::thread::scope(|s| {
            let mut w = BackgroundWriter::start(s, &file);
            for i in (0..50u8).rev() {
                let mut b = w.buffer();
                b.extend_from_slice(&[i; 3]);
                w.write(b, 3 * i as u64).unwrap();
            }
            w.finish().unwrap();
        });
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        let want: Vec<u8> = (0..50u8).flat_map(|i| [i; 3]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_failed_write_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        File::create(&path).unwrap();
        // Opened read-only: every write fails.
        let file = File::open(&path).unwrap();
        let err = std::thread::scope(|s| {
            let mut w = BackgroundWriter::start(s, &file);
            let mut result = Ok(());
            for _ in 0..10 {
                result = result.and_then(|()| w.write(vec![1; 4], 0));
            }
            result.and_then(|()| w.finish())
        });
        let msg = format!("{:#}", err.unwrap_err());
        assert!(msg.contains("cannot write the output file"), "{msg}");
    }
}
