//! Property tests: arbitrary bytes never panic the frame decoder, and a
//! flipped bit anywhere — in any frame a sender puts on the lane, or in a
//! staged file on disk — is either harmless or caught, never accepted as data.

/// Every test sits under `snapshot::` so `cargo test -p flotilla-router snapshot` selects it.
mod snapshot {
    use bytes::Bytes;
    use flotilla_router::snapshot::frame::{Frame, FRAME_VERSION};
    use flotilla_router::snapshot::testing::{
        pseudo_random_chunk, staging_files, Pair, PseudoRandomSource, RecordingSink,
    };
    use flotilla_router::snapshot::{SnapshotConfig, SnapshotError, SnapshotRequest, WireChunk};
    use proptest::prelude::*;
    use tokio::time::{sleep, Duration};

    const CHUNK: usize = 8 << 10;
    const CHUNKS: u64 = 6;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&Bytes::from(bytes));
        }

        /// Past the version and kind checks, to exercise every body decoder.
        #[test]
        fn decoding_plausible_frames_never_panics(kind in 0u8..12, body in proptest::collection::vec(any::<u8>(), 0..96)) {
            let mut bytes = vec![FRAME_VERSION, kind];
            bytes.extend(body);
            if let Ok(frame) = Frame::decode(&Bytes::from(bytes.clone())) {
                // Whatever decodes re-encodes to the same bytes.
                prop_assert_eq!(frame.encode(), Bytes::from(bytes));
            }
        }

        #[test]
        fn lz4_blocks_from_the_wire_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256), out_len in 0usize..4096) {
            let mut out = vec![0u8; out_len];
            let _ = lz4_flex::block::decompress_into(&payload, &mut out);
        }

        #[test]
        fn a_flipped_bit_in_an_encoded_chunk_is_caught(fill in any::<u8>(), compressible in any::<bool>(), bit in 0usize..(8 * 4096)) {
            let raw: Vec<u8> = if compressible { vec![fill; 4096] } else { pseudo_random_chunk(u64::from(fill), 0, 4096).to_vec() };
            let frame = Frame::Chunk { transfer_id: 1, chunk: WireChunk::encode(0, Bytes::from(raw.clone())) }.encode();
            let mut bytes = frame.to_vec();
            let bit = bit % (8 * bytes.len());
            bytes[bit / 8] ^= 1 << (bit % 8);
            // A flip in the version, kind or transfer id makes it another
            // frame or none; otherwise the chunk must not verify.
            if let Ok(Frame::Chunk { chunk, transfer_id: 1 }) = Frame::decode(&Bytes::from(bytes)) {
                prop_assert!(chunk.verify_and_decode().is_err());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Flip one bit of one frame from the sender (reservation, header,
        /// chunks, finish): the transfer fails cleanly, or succeeds with exactly
        /// the source's data (e.g. a flip in the size hint). Never corrupt data,
        /// never a leftover staging file.
        #[test]
        fn a_flipped_bit_in_any_sender_frame_is_caught_or_harmless(frame_index in 0u64..(CHUNKS + 3), bit in any::<usize>()) {
            runtime().block_on(async move {
                let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
                let pair = Pair::start(SnapshotConfig::new(dir_a.path()), SnapshotConfig::new(dir_b.path()), RecordingSink::new(), 1).unwrap();
                pair.network.set_filter(Some(Box::new(move |from, _to, n, frame: Bytes| {
                    if from != 1 || n != frame_index {
                        return Some(frame);
                    }
                    let mut bytes = frame.to_vec();
                    let bit = bit % (8 * bytes.len());
                    bytes[bit / 8] ^= 1 << (bit % 8);
                    Some(Bytes::from(bytes))
                })));
                let request = SnapshotRequest { to: 2, range_id: 1, index: 5, term: 1, size_hint_bytes: 1 << 20 };
                let result = pair.a.send(request, PseudoRandomSource::new(9, CHUNKS, CHUNK)).await;
                match result {
                    Ok(_) => {
                        let staged = pair.sink_b.take();
                        assert_eq!(staged.len(), 1);
                        let mut reader = staged[0].reader().unwrap();
                        assert_eq!(reader.header().unwrap(), PseudoRandomSource::header_for(9));
                        for i in 0..CHUNKS {
                            assert_eq!(reader.next_chunk().unwrap().unwrap(), pseudo_random_chunk(9, i, CHUNK));
                        }
                        assert_eq!(reader.next_chunk().unwrap(), None);
                    }
                    Err(error) => {
                        assert!(!matches!(error, SnapshotError::Source { .. } | SnapshotError::Staging { .. }), "{error:?}");
                        assert!(pair.sink_b.take().is_empty(), "failed, yet staged: {error:?}");
                    }
                }
                // Whatever happened, once the dust settles nothing is left over.
                sleep(Duration::from_secs(61)).await;
                assert!(staging_files(dir_b.path()).is_empty());
                assert_eq!(pair.b.receives_active(), 0);
            });
        }

        /// A staged file that rots on disk before apply is caught by the reader.
        #[test]
        fn a_flipped_bit_in_a_staged_file_is_caught_by_the_reader(offset in any::<usize>(), bit in 0u8..8) {
            runtime().block_on(async move {
                let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
                let pair = Pair::start(SnapshotConfig::new(dir_a.path()), SnapshotConfig::new(dir_b.path()), RecordingSink::new(), 1).unwrap();
                let request = SnapshotRequest { to: 2, range_id: 1, index: 5, term: 1, size_hint_bytes: 1 << 20 };
                pair.a.send(request, PseudoRandomSource::new(9, CHUNKS, CHUNK)).await.unwrap();
                let staged = pair.sink_b.take().pop().unwrap();
                let mut bytes = std::fs::read(staged.path()).unwrap();
                let offset = offset % bytes.len();
                bytes[offset] ^= 1 << bit;
                std::fs::write(staged.path(), bytes).unwrap();
                let mut reader = staged.reader().unwrap();
                let mut outcome = reader.header().map(|_| ());
                while outcome.is_ok() {
                    match reader.next_chunk() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(error) => outcome = Err(error),
                    }
                }
                assert!(outcome.is_err(), "bit {bit} of byte {offset} flipped, yet the staged snapshot read back clean");
            });
        }
    }
}
