//! The wire format: every message kind round-trips, coalescing keeps
//! every heartbeat, and no input — random, truncated, bit-flipped or with
//! absurd length fields — panics or allocates beyond the frame.

use bytes::{Bytes, BytesMut};
use flotilla_raftgroup::{
    ConfState, Entry, EntryKind, Message, MessageBody, Snapshot, SnapshotMeta,
};
use flotilla_router::transport::{codec, frame, CodecError, FrameError};
use flotilla_router::RaftEnvelope;
use proptest::prelude::*;

fn bytes_strategy() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn entry_strategy() -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<u64>(), any::<bool>(), bytes_strategy()).prop_map(
        |(term, index, conf, data)| Entry {
            term,
            index,
            kind: if conf {
                EntryKind::ConfChange
            } else {
                EntryKind::Normal
            },
            data,
        },
    )
}

fn body_strategy() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(pre, last_index, last_term, transfer)| {
                MessageBody::RequestVote {
                    pre,
                    last_index,
                    last_term,
                    transfer,
                }
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre, reject)| MessageBody::RequestVoteResponse { pre, reject }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(entry_strategy(), 0..5),
            any::<u64>()
        )
            .prop_map(
                |(prev_index, prev_term, entries, commit)| MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            ),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(reject, index, hint_index, hint_term)| {
                MessageBody::AppendResponse {
                    reject,
                    index,
                    hint_index,
                    hint_term,
                }
            }
        ),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(commit, seq, quiesce)| {
            MessageBody::Heartbeat {
                commit,
                seq,
                quiesce,
            }
        }),
        any::<u64>().prop_map(|seq| MessageBody::HeartbeatResponse { seq }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u64>(), 0..7),
            prop::collection::vec(any::<u64>(), 0..3),
            bytes_strategy()
        )
            .prop_map(|(index, term, voters, learners, data)| {
                MessageBody::InstallSnapshot {
                    snapshot: Snapshot {
                        meta: SnapshotMeta {
                            index,
                            term,
                            conf_state: ConfState { voters, learners },
                        },
                        data,
                    },
                }
            }),
        Just(MessageBody::TimeoutNow),
        Just(MessageBody::NotMember),
        bytes_strategy().prop_map(|context| MessageBody::ReadIndex { context }),
        (bytes_strategy(), any::<u64>())
            .prop_map(|(context, index)| MessageBody::ReadIndexResponse { context, index }),
    ]
}

fn envelope_strategy() -> impl Strategy<Value = RaftEnvelope> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        body_strategy(),
    )
        .prop_map(|(range_id, from, to, term, body)| RaftEnvelope {
            range_id,
            message: Message {
                from,
                to,
                term,
                body,
            },
        })
}

fn is_heartbeat(env: &RaftEnvelope) -> bool {
    matches!(
        env.message.body,
        MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResponse { .. }
    )
}

/// What a receiver sees for `sent`: coalesced heartbeats first, the rest in
/// send order.
fn expected_order(sent: &[RaftEnvelope]) -> Vec<RaftEnvelope> {
    let mut out: Vec<RaftEnvelope> = sent.iter().filter(|e| is_heartbeat(e)).cloned().collect();
    out.extend(sent.iter().filter(|e| !is_heartbeat(e)).cloned());
    out
}

fn decode_frames(mut wire: BytesMut, max: usize) -> Vec<codec::DecodedBatch> {
    let mut batches = Vec::new();
    while let Some(frame) = frame::decode(&mut wire, max).expect("valid frame") {
        assert_eq!(frame.kind, frame::FrameKind::Raft);
        batches.push(codec::decode_batch(frame.payload).expect("valid batch"));
    }
    assert!(wire.is_empty(), "a partial frame was left over");
    batches
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_kind_round_trips_alone(env in envelope_strategy()) {
        let encoded = codec::encode_message(&env);
        prop_assert_eq!(codec::decode_message(encoded).unwrap(), env);
    }

    #[test]
    fn batches_round_trip_with_heartbeats_coalesced(messages in prop::collection::vec(envelope_strategy(), 0..40)) {
        let mut wire = BytesMut::new();
        let summary = codec::encode_frames(&messages, &mut wire, 1 << 20);
        let heartbeats = messages.iter().filter(|e| is_heartbeat(e)).count();
        prop_assert_eq!(summary.frames, usize::from(!messages.is_empty()));
        prop_assert_eq!(summary.heartbeats_coalesced, heartbeats);
        prop_assert_eq!(summary.heartbeat_items, usize::from(heartbeats > 0));
        let batches = decode_frames(wire, 1 << 20);
        let received: Vec<RaftEnvelope> = batches.into_iter().flat_map(|b| b.messages).collect();
        prop_assert_eq!(received, expected_order(&messages));
    }

    #[test]
    fn small_frame_limit_splits_but_loses_nothing(messages in prop::collection::vec(envelope_strategy(), 1..120)) {
        // 4 KiB frames force splits both inside the heartbeat item and
        // between messages; every message here fits in one frame.
        let max = frame::FRAME_BYTES_MIN;
        let mut wire = BytesMut::new();
        let summary = codec::encode_frames(&messages, &mut wire, max);
        prop_assert_eq!(summary.dropped_too_large, 0);
        let mut rest = wire.clone();
        while !rest.is_empty() {
            let frame = frame::decode(&mut rest, max).unwrap().unwrap();
            prop_assert!(frame.payload.len() + frame::FRAME_HEADER_BYTES <= max);
        }
        let received: Vec<RaftEnvelope> = decode_frames(wire, max).into_iter().flat_map(|b| b.messages).collect();
        prop_assert_eq!(received, expected_order(&messages));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode_batch(Bytes::from(data.clone()));
        let _ = codec::decode_message(Bytes::from(data.clone()));
        let _ = frame::decode_exact(&data, 1 << 20);
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = frame::decode(&mut buf, 1 << 20) {}
        // Also behind a valid version byte, so the item decoder is reached.
        let mut versioned = vec![codec::CODEC_VERSION];
        versioned.extend_from_slice(&data);
        let _ = codec::decode_batch(Bytes::from(versioned));
    }

    #[test]
    fn mutated_valid_batches_never_panic(
        messages in prop::collection::vec(envelope_strategy(), 1..10),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut wire = BytesMut::new();
        codec::encode_frames(&messages, &mut wire, 1 << 20);
        let mut payload = wire.split_off(frame::FRAME_HEADER_BYTES).to_vec();
        for (at, byte) in edits {
            let i = at.index(payload.len());
            payload[i] = byte;
        }
        let _ = codec::decode_batch(Bytes::from(payload));
    }

    #[test]
    fn truncated_frames_are_rejected(messages in prop::collection::vec(envelope_strategy(), 1..10), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        codec::encode_frames(&messages, &mut wire, 1 << 20);
        let keep = cut.index(wire.len()); // strictly shorter than the frame
        let truncated = frame::decode_exact(&wire[..keep], 1 << 20);
        let is_truncated = matches!(truncated, Err(FrameError::Truncated { .. }));
        prop_assert!(is_truncated, "{:?}", truncated);
    }

    #[test]
    fn any_flipped_bit_is_rejected(messages in prop::collection::vec(envelope_strategy(), 1..10), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut wire = BytesMut::new();
        codec::encode_frames(&messages, &mut wire, 1 << 20);
        let mut flipped = wire.to_vec();
        let i = at.index(flipped.len());
        flipped[i] ^= 1 << bit;
        prop_assert!(frame::decode_exact(&flipped, 1 << 20).is_err(), "flip at byte {} bit {} accepted", i, bit);
    }
}

#[test]
fn absurd_length_fields_are_refused_before_allocating() {
    // Frame: a 4 GiB length is refused from the 9-byte header alone.
    let mut header = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0, 0][..]);
    let refused = frame::decode(&mut header, 1 << 20);
    assert!(
        matches!(refused, Err(FrameError::TooLarge { .. })),
        "{refused:?}"
    );
    assert!(
        header.capacity() < 1024,
        "decode reserved {} bytes",
        header.capacity()
    );

    // Append claiming u64::MAX entries in a few bytes.
    let mut payload = vec![codec::CODEC_VERSION, 1, 1, 1, 2, 3, 3, 0, 0, 0];
    payload.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(matches!(
        codec::decode_batch(Bytes::from(payload)),
        Err(CodecError::Truncated(_))
    ));

    // A heartbeat item claiming 4 billion tuples.
    let payload = vec![
        codec::CODEC_VERSION,
        2,
        0xff,
        0xff,
        0xff,
        0xff,
        0,
        1,
        1,
        2,
        3,
        4,
        5,
    ];
    assert!(matches!(
        codec::decode_batch(Bytes::from(payload)),
        Err(CodecError::Truncated(_))
    ));

    // An entry whose data length is larger than the input.
    let mut payload = vec![codec::CODEC_VERSION, 1, 1, 1, 2, 3, 3, 0, 0, 0, 1, 3, 1, 0];
    payload.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        codec::decode_batch(Bytes::from(payload)),
        Err(CodecError::Truncated(_))
    ));

    // A varint longer than 64 bits.
    let mut payload = vec![codec::CODEC_VERSION, 1];
    payload.extend_from_slice(&[0xff; 11]);
    assert_eq!(
        codec::decode_batch(Bytes::from(payload)),
        Err(CodecError::VarintOverflow)
    );
}

#[test]
fn oversized_frames_are_refused_with_a_clear_error() {
    let mut wire = BytesMut::new();
    frame::encode(frame::FrameKind::Lane, &[7u8; 10_000], &mut wire, 1 << 20).unwrap();
    let err = frame::decode_exact(&wire, 8192).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLarge {
            len: 10_009,
            max: 8192
        }
    );
    assert_eq!(
        err.to_string(),
        "frame of 10009 bytes exceeds the maximum of 8192 bytes"
    );
    assert!(frame::encode(
        frame::FrameKind::Lane,
        &[7u8; 10_000],
        &mut BytesMut::new(),
        8192
    )
    .is_err());
}

#[test]
fn a_message_larger_than_a_frame_is_dropped_and_counted_not_sent() {
    let big = RaftEnvelope {
        range_id: 1,
        message: Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![Entry::new(1, 1, vec![0u8; 10_000])],
                commit: 0,
            },
        },
    };
    let small = RaftEnvelope {
        range_id: 2,
        message: Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::TimeoutNow,
        },
    };
    let mut wire = BytesMut::new();
    let summary = codec::encode_frames(&[small.clone(), big, small.clone()], &mut wire, 4096);
    assert_eq!(summary.dropped_too_large, 1);
    assert_eq!(summary.messages, 2);
    let received: Vec<RaftEnvelope> = decode_frames(wire, 4096)
        .into_iter()
        .flat_map(|b| b.messages)
        .collect();
    assert_eq!(received, vec![small.clone(), small]);
}

#[test]
fn an_unknown_codec_version_is_refused() {
    let mut wire = BytesMut::new();
    let env = RaftEnvelope {
        range_id: 1,
        message: Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::TimeoutNow,
        },
    };
    codec::encode_frames(&[env], &mut wire, 1 << 20);
    let mut payload = wire.split_off(frame::FRAME_HEADER_BYTES).to_vec();
    payload[0] = 99;
    assert_eq!(
        codec::decode_batch(Bytes::from(payload)),
        Err(CodecError::UnsupportedVersion(99))
    );
}
