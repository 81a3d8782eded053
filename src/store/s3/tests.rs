//! The readers and writers of objects against `object_store`'s in-memory store (the real
//! server is exercised by tests/s3_store.rs against Garage).

use super::fetch::{RemoteBytes, BLOCK, DIRECT, GET_PART};
use super::upload::{Upload, FIRST, PART};
use super::Bucket;
use crate::source::Dtype;
use crate::store::codec::CHUNK_BYTES;
use crate::store::tensor_file::{self, Encoding, TensorFile, TensorHeader};

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 7) as u8 & 0x3f
        })
        .collect()
}

#[test]
fn uploads_put_the_prefix_first_whatever_the_size() {
    let b = Bucket::in_memory("t");
    for (i, size) in [0, 10, FIRST - 1, FIRST, FIRST + 1, FIRST + 2 * PART + 12345]
        .into_iter()
        .enumerate()
    {
        let body = pattern(size, i as u32);
        let key = format!("obj{i}");
        let mut up = Upload::new(b.clone(), key.clone());
        // Pieces of odd sizes, as frames come.
        for piece in body.chunks(777_777) {
            up.write(piece).unwrap();
        }
        let prefix = b"HEADER+INDEX".to_vec();
        let n = up.finish(&prefix).unwrap();
        let got = b.get(&key).unwrap().unwrap();
        assert_eq!(n as usize, prefix.len() + size);
        assert_eq!(&got[..prefix.len()], &prefix[..]);
        assert!(got[prefix.len()..] == body[..], "object of {size} bytes");
    }
}

#[test]
fn an_abandoned_upload_leaves_no_object() {
    let b = Bucket::in_memory("t");
    let mut up = Upload::new(b.clone(), "x".into());
    up.write(&pattern(FIRST + PART + 1, 1)).unwrap();
    drop(up);
    assert!(b.get("x").unwrap().is_none());
}

#[test]
fn ranged_reads_forward_backward_and_across_blocks() {
    let b = Bucket::in_memory("t");
    // Small reads through blocks, large ones straight in parallel parts, mixed in any order.
    let data = pattern(3 * GET_PART as usize + 1000, 3);
    b.put("o", data.clone()).unwrap();
    let r = RemoteBytes::new(b.clone(), "o".into(), data.len() as u64);
    let n = data.len() as u64;
    for (s, e) in [
        (0, 12),
        (0, 100),
        (BLOCK - 5, BLOCK + 5),
        (BLOCK + 10, 2 * BLOCK + 10),
        (3, 4),
        (10, 10 + DIRECT),
        (GET_PART - 7, 2 * GET_PART + 7),
        (20, 30),
        (2 * BLOCK, n),
        (n - 3, n),
        (n, n),
        (0, n),
    ] {
        assert!(
            r.read(s, e).unwrap() == data[s as usize..e as usize],
            "{s}..{e}"
        );
    }
    assert!(r.read(0, n + 1).is_err());
    // An object shorter than recorded is an error naming it.
    let short = RemoteBytes::new(b.clone(), "o".into(), n + 10);
    let err = format!("{:#}", short.read(n - 5, n + 10).unwrap_err());
    assert!(err.contains("s3://t/o"), "{err}");
    let err = format!("{:#}", short.read(n - DIRECT, n + 10).unwrap_err());
    assert!(err.contains("s3://t/o"), "{err}");
    let missing = RemoteBytes::new(b, "nope".into(), 10);
    let err = format!("{:#}", missing.read(0, 10).unwrap_err());
    assert!(err.contains("s3://t/nope"), "{err}");
}

#[test]
fn tensor_files_upload_and_read_back_by_ranges() {
    let b = Bucket::in_memory("t");
    // BF16 bytes, 9.5 chunks: a multipart upload with its header part last.
    let payload = pattern(CHUNK_BYTES * 19 / 2, 5);
    for encoding in [Encoding::Zstd, Encoding::Raw] {
        let h = TensorHeader {
            name: "w".into(),
            dtype: Dtype::BF16,
            shape: vec![payload.len() as u64 / 2],
            encoding,
            raw_bytes: payload.len() as u64,
            hash: crate::content_hash::content_hash(&payload),
            chunk_bytes: encoding.is_chunked().then_some(CHUNK_BYTES as u64),
            base: None,
        };
        let key = format!("tensors/{encoding}.gmat");
        let up = Upload::new(b.clone(), key.clone());
        let size = match encoding {
            Encoding::Raw => tensor_file::upload_raw(up, &h, &payload, &|_| {}).unwrap(),
            _ => tensor_file::upload_chunked(up, &h, &payload, None, &|_| {}).unwrap(),
        };
        let f = TensorFile::open_remote(RemoteBytes::new(b.clone(), key.clone(), size)).unwrap();
        assert_eq!(f.header, h);
        assert!(!f.is_mapped());
        assert_eq!(f.chunk_count(), 10);
        let mut mid = vec![0u8; CHUNK_BYTES * 3];
        f.decode_chunks(4, 7, None, &mut mid).unwrap();
        assert!(mid == payload[4 * CHUNK_BYTES..7 * CHUNK_BYTES]);
        // more chunks than one remote piece, from the middle to the short last chunk
        let mut tail = vec![0u8; payload.len() - CHUNK_BYTES];
        f.decode_chunks(1, 10, None, &mut tail).unwrap();
        assert!(tail == payload[CHUNK_BYTES..]);
        f.verify(&h.hash).unwrap();
        // The same bytes as the local writer's file.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gmat");
        match encoding {
            Encoding::Raw => tensor_file::write_raw(&p, &h, &payload).unwrap(),
            _ => tensor_file::write_chunked(
                &p,
                &h,
                &payload,
                None,
                &|_| {},
                &crate::store::commit::CommitNow,
            )
            .unwrap(),
        };
        assert!(std::fs::read(&p).unwrap() == b.get(&key).unwrap().unwrap().to_vec());
        // A truncated object is refused at open.
        let err = TensorFile::open_remote(RemoteBytes::new(b.clone(), key, size - 1))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("s3://t/tensors/"), "{err}");
    }
}
