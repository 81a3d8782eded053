//! Positional writes on a background thread, so that copying finished rows into the output
//! files (a page-cache copy that can cost as much as quantizing Q8_0) overlaps the work on the
//! next rows instead of stalling every core.
//!
//! At most [`IN_FLIGHT`] buffers wait for the writer: memory stays bounded by a few chunks.
//! Buffers come back to the producer for reuse. Writes land at explicit offsets, so the bytes
//! of the files do not depend on when each write happens. One buffer can go to several files
//! (several profiles sharing a tensor's bytes) and, in order, to a cache entry ("tee"): the
//! writer appends it there too and commits the entry when told, after every earlier write.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use anyhow::{anyhow, Context, Result};

use crate::cache::entry::EntryWriter;

/// Buffers queued for the writer before the producer waits.
const IN_FLIGHT: usize = 2;

/// Where a buffer goes: (index into the writer's files, byte offset).
pub type Dest = (usize, u64);

enum Msg {
    Write {
        buf: Vec<u8>,
        dests: Vec<Dest>,
        tee: Option<u64>,
    },
    Tee(u64, Box<EntryWriter>),
    Commit(u64),
}

/// Sends buffers to a writer thread; see the module documentation.
pub struct BackgroundWriter<'scope> {
    jobs: Option<SyncSender<Msg>>,
    spare: Arc<Mutex<Receiver<Vec<u8>>>>,
    thread: Option<ScopedJoinHandle<'scope, std::io::Result<()>>>,
}

impl<'scope> BackgroundWriter<'scope> {
    /// Starts the writer thread for `files` inside `scope`.
    pub fn start<'env>(scope: &'scope Scope<'scope, 'env>, files: &'env [File]) -> Self {
        let (jobs, queue) = mpsc::sync_channel::<Msg>(IN_FLIGHT);
        let (give_back, spare) = mpsc::channel();
        let thread = scope.spawn(move || -> std::io::Result<()> {
            let mut tees: HashMap<u64, EntryWriter> = HashMap::new();
            let mut warned = false;
            // A cache that cannot be written is not an export failure: say so once.
            let mut warn = |e: anyhow::Error| {
                if !warned {
                    eprintln!("warning: the quantized-tensor cache is not written: {e:#}");
                    warned = true;
                }
            };
            for msg in queue {
                match msg {
                    Msg::Write { buf, dests, tee } => {
                        for (f, at) in dests {
                            let file = files.get(f).ok_or_else(|| {
                                std::io::Error::other(format!("no output file {f}"))
                            })?;
                            file.write_all_at(&buf, at)?;
                            crate::fsio::start_writeback(file, at, buf.len());
                        }
                        if let Some(id) = tee {
                            if let Some(w) = tees.get_mut(&id) {
                                if let Err(e) = w.append(&buf) {
                                    tees.remove(&id);
                                    warn(e);
                                }
                            }
                        }
                        // The producer may have finished and dropped its end: nothing to reuse.
                        let _ = give_back.send(buf);
                    }
                    Msg::Tee(id, w) => {
                        tees.insert(id, *w);
                    }
                    Msg::Commit(id) => {
                        if let Some(w) = tees.remove(&id) {
                            if let Err(e) = w.commit() {
                                warn(e);
                            }
                        }
                    }
                }
            }
            Ok(())
        });
        BackgroundWriter {
            jobs: Some(jobs),
            spare: Arc::new(Mutex::new(spare)),
            thread: Some(thread),
        }
    }

    /// An empty buffer, reusing one the writer has finished with when there is one.
    pub fn buffer(&self) -> Vec<u8> {
        spare_buffer(&self.spare)
    }

    /// A second producer, for another thread; the writer keeps running until it is dropped
    /// too (drop it before [`BackgroundWriter::finish`]).
    pub fn handle(&self) -> Option<WriterHandle> {
        Some(WriterHandle {
            jobs: self.jobs.clone()?,
            spare: self.spare.clone(),
        })
    }

    /// Queues `buf` to be written at byte `at` of file 0.
    pub fn write(&mut self, buf: Vec<u8>, at: u64) -> Result<()> {
        self.write_to(buf, vec![(0, at)], None)
    }

    /// Queues `buf` to be written at every place in `dests` and appended to the cache entry
    /// `tee` (see [`BackgroundWriter::tee`]); waits while [`IN_FLIGHT`] buffers are queued.
    pub fn write_to(&mut self, buf: Vec<u8>, dests: Vec<Dest>, tee: Option<u64>) -> Result<()> {
        self.send(Msg::Write { buf, dests, tee })
    }

    /// Starts cache entry `id`: the buffers written with `tee: Some(id)` are appended to it.
    pub fn tee(&mut self, id: u64, entry: EntryWriter) -> Result<()> {
        self.send(Msg::Tee(id, Box::new(entry)))
    }

    /// Commits cache entry `id` once every earlier buffer is written.
    pub fn commit(&mut self, id: u64) -> Result<()> {
        self.send(Msg::Commit(id))
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(msg).is_ok(),
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

fn spare_buffer(spare: &Mutex<Receiver<Vec<u8>>>) -> Vec<u8> {
    let mut b = spare
        .lock()
        .ok()
        .and_then(|s| s.try_recv().ok())
        .unwrap_or_default();
    b.clear();
    b
}

/// Another thread's way to queue writes to a [`BackgroundWriter`] (see
/// [`BackgroundWriter::handle`]).
pub struct WriterHandle {
    jobs: SyncSender<Msg>,
    spare: Arc<Mutex<Receiver<Vec<u8>>>>,
}

impl WriterHandle {
    /// An empty buffer, reusing one the writer has finished with when there is one.
    pub fn buffer(&self) -> Vec<u8> {
        spare_buffer(&self.spare)
    }

    /// Queues `buf` to be written at every place in `dests` (see
    /// [`BackgroundWriter::write_to`]).
    pub fn write_to(&self, buf: Vec<u8>, dests: Vec<Dest>) -> Result<()> {
        self.jobs
            .send(Msg::Write {
                buf,
                dests,
                tee: None,
            })
            .map_err(|_| anyhow!("the output writer stopped unexpectedly"))
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
            let mut w = BackgroundWriter::start(s, std::slice::from_ref(&file));
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
            let mut w = BackgroundWriter::start(s, std::slice::from_ref(&file));
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
