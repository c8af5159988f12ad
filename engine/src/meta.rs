//! What the engine persists about each range in the state store: its
//! descriptor and whether it is frozen as the source of a merge.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flotilla_router::range::RangeDescriptor;
use flotilla_router::RangeId;

/// A merge this range is the frozen source of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frozen {
    /// The range that will absorb this one.
    pub target: RangeId,
    /// Log index of the freeze command: every replica must have applied it
    /// before the target absorbs the range.
    pub index: u64,
}

/// The persisted state of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeMeta {
    pub desc: RangeDescriptor,
    pub frozen: Option<Frozen>,
}

const FORMAT_VERSION: u8 = 1;

impl RangeMeta {
    pub(crate) fn encode(&self) -> Bytes {
        let desc = self.desc.encode();
        let mut buf = BytesMut::with_capacity(desc.len() + 22);
        buf.put_u8(FORMAT_VERSION);
        buf.put_u32_le(desc.len() as u32);
        buf.put_slice(&desc);
        match self.frozen {
            Some(f) => {
                buf.put_u8(1);
                buf.put_u64_le(f.target);
                buf.put_u64_le(f.index);
            }
            None => buf.put_u8(0),
        }
        buf.freeze()
    }

    pub(crate) fn decode(data: &[u8]) -> Result<RangeMeta, String> {
        let mut buf = data;
        if buf.remaining() < 5 {
            return Err("range metadata truncated".into());
        }
        let version = buf.get_u8();
        if version != FORMAT_VERSION {
            return Err(format!("unknown range metadata version {version}"));
        }
        let len = buf.get_u32_le() as usize;
        if buf.remaining() < len + 1 {
            return Err("range metadata truncated".into());
        }
        let desc = RangeDescriptor::decode(&buf[..len]).map_err(|e| e.to_string())?;
        buf.advance(len);
        let frozen = match buf.get_u8() {
            0 => None,
            1 if buf.remaining() >= 16 => Some(Frozen {
                target: buf.get_u64_le(),
                index: buf.get_u64_le(),
            }),
            _ => return Err("range metadata: bad merge state".into()),
        };
        Ok(RangeMeta { desc, frozen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let meta = RangeMeta {
            desc: RangeDescriptor::whole_key_space(3, vec![]),
            frozen: Some(Frozen {
                target: 1,
                index: 44,
            }),
        };
        assert_eq!(RangeMeta::decode(&meta.encode()).unwrap(), meta);
        assert!(RangeMeta::decode(&meta.encode()[..6]).is_err());
    }
}
