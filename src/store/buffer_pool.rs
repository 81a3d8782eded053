//! A few byte buffers kept for reuse, so that reading tensor after tensor does not page in and
//! zero (or, on another thread, leave in a malloc arena) a fresh buffer each time.

use std::sync::Mutex;

/// Up to `max_count` buffers of at most `max_capacity` bytes each.
pub struct BufferPool {
    bufs: Mutex<Vec<Vec<u8>>>,
    max_count: usize,
    max_capacity: usize,
}

impl BufferPool {
    pub const fn new(max_count: usize, max_capacity: usize) -> BufferPool {
        BufferPool {
            bufs: Mutex::new(Vec::new()),
            max_count,
            max_capacity,
        }
    }

    /// A buffer from the pool (with whatever it held), or a new empty one.
    pub fn take(&self) -> Vec<u8> {
        self.bufs
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default()
    }

    /// Keeps `buf` for a later [`BufferPool::take`] if the pool has room and it is not larger
    /// than the pool keeps; frees it otherwise.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_capacity {
            return;
        }
        if let Ok(mut b) = self.bufs.lock() {
            if b.len() < self.max_count {
                b.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_count_and_no_oversized_buffers() {
        let pool = BufferPool::new(2, 100);
        pool.give(Vec::with_capacity(1000));
        assert_eq!(pool.take().capacity(), 0, "an oversized buffer is freed");
        for _ in 0..3 {
            pool.give(vec![7u8; 10]);
        }
        assert_eq!(pool.take(), vec![7u8; 10]);
        assert_eq!(pool.take(), vec![7u8; 10]);
        assert_eq!(pool.take().capacity(), 0, "only two were kept");
    }
}
