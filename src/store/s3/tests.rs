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

#[test]
fn segments_come_out_whole_whatever_the_pieces() {
    use super::fetch::Segments;
    let lens = [5usize, 0, 1, 12, 0, 0, 7];
    let data = pattern(lens.iter().sum(), 9);
    let want: Vec<&[u8]> = {
        let mut at = 0;
        lens.iter()
            .map(|&l| {
                at += l;
                &data[at - l..at]
            })
            .collect()
    };
    // Every way of cutting the stream into pieces of one fixed size, and byte by byte.
    for piece in 1..=data.len() {
        let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut each = |i: usize, s: &[u8]| {
            got.push((i, s.to_vec()));
            Ok(())
        };
        let mut seg = Segments::new(&lens);
        for p in data.chunks(piece) {
            assert!(seg.push(p, &mut each).unwrap());
        }
        seg.finish(&mut each).unwrap();
        assert!(seg.is_done());
        drop(seg);
        assert_eq!(got.len(), lens.len(), "pieces of {piece}");
        for (k, (i, s)) in got.iter().enumerate() {
            assert_eq!((*i, &s[..]), (k, want[k]), "pieces of {piece}");
        }
    }
    // Bytes past the last segment are refused; too few leave it unfinished.
    let mut none = |_: usize, _: &[u8]| Ok(());
    let mut seg = Segments::new(&lens);
    assert!(!seg.push(&pattern(data.len() + 1, 9), &mut none).unwrap());
    let mut seg = Segments::new(&lens);
    assert!(seg.push(&data[..data.len() - 1], &mut none).unwrap());
    seg.finish(&mut none).unwrap();
    assert!(!seg.is_done());
    // An error from the consumer stops the stream.
    let mut seg = Segments::new(&lens);
    let mut fail = |i: usize, _: &[u8]| {
        anyhow::ensure!(i < 3, "stop at {i}");
        Ok(())
    };
    let err = seg.push(&data, &mut fail).unwrap_err();
    assert_eq!(err.to_string(), "stop at 3");
}

#[test]
fn streamed_reads_check_the_object_length() {
    let b = Bucket::in_memory("t");
    let data = pattern(1000, 4);
    b.put("o", data.clone()).unwrap();
    let lens = [300usize, 0, 700];
    let mut got = Vec::new();
    RemoteBytes::new(b.clone(), "o".into(), 1000)
        .read_segments(0, &lens, None, |i, s| {
            got.push((i, s.len()));
            Ok(())
        })
        .unwrap();
    assert_eq!(got, [(0, 300), (1, 0), (2, 700)]);
    // A window read with the next one opened ahead: the next read uses that GET when it asks
    // for exactly its range, and starts over when it asks for another.
    let r = RemoteBytes::new(b.clone(), "o".into(), 1000);
    for (start, len, then) in [
        (0u64, 300usize, Some(600u64)),
        (300, 300, Some(900)),
        (600, 100, Some(800)),
        (100, 50, None),
        (150, 850, Some(2000)),
    ] {
        let mut bytes = Vec::new();
        r.read_segments(start, &[len], then, |_, s| {
            bytes.extend_from_slice(s);
            Ok(())
        })
        .unwrap();
        let want = &data[start as usize..start as usize + len];
        assert!(bytes == want, "{start}+{len}");
    }
    let failure = |r: RemoteBytes, start: u64, lens: &[usize]| {
        let e = r.read_segments(start, lens, None, |_, _| Ok(()));
        format!("{:#}", e.unwrap_err())
    };
    // Past the recorded size: refused before any request.
    let err = failure(RemoteBytes::new(b.clone(), "o".into(), 1000), 1, &lens);
    assert!(err.contains("s3://t/o") && err.contains("outside"), "{err}");
    // An object shorter than recorded: the answer ends early.
    let err = failure(RemoteBytes::new(b.clone(), "o".into(), 1200), 500, &[700]);
    assert!(err.contains("s3://t/o"), "{err}");
    // A missing object is named.
    let err = failure(RemoteBytes::new(b, "nope".into(), 10), 0, &[10]);
    assert!(err.contains("s3://t/nope"), "{err}");
}
