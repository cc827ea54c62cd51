//! The envelope around each record and the hash chain through them (`journal-format.md` §3, §4).
//!
//! ```text
//! offset  size  field
//!      0     2  format version, u16 little-endian: the record's own (Record::format: 2 or 3; 1 in
//!               records written by format 1)
//!      2     2  kind tag, u16 little-endian (Record::kind)
//!      4     8  run id, u64 little-endian
//!     12     8  time, unix milliseconds, u64 little-endian
//!     20    32  link = SHA-256(previous link ‖ seq as u64 LE ‖ bytes 0..20 ‖ payload)
//!     52     …  payload: postcard encoding of the record's fields
//! ```
//! The previous link of the first record is `GENESIS_LINK`.

use sha2::{Digest, Sha256};

use super::record::{Record, RunId, Seq};

/// The highest format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 3;
/// The format of a fresh journal's marker and of every record format 2 already had: a journal
/// that never needed format 3 stays readable by the stepwise that wrote format 2.
pub const BASE_FORMAT: u16 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 52;

pub type Link = [u8; 32];

/// The link before the first record: SHA-256 of the ASCII bytes `stepwise journal`.
pub fn genesis_link() -> Link {
    Sha256::digest(b"stepwise journal").into()
}

/// A record as stored, with where it sits and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: Seq,
    pub run: RunId,
    pub at_ms: u64,
    pub record: Record,
    pub link: Link,
}

/// What is wrong with one envelope. The journal adds the path and the sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    TooShort(usize),
    /// Written by a newer stepwise.
    NewerFormat(u16),
    /// Format 0 was never written.
    BadFormat(u16),
    UnknownKind(u16),
    /// The stored link is not the hash of the previous link and this record.
    ChainBroken,
    Payload(String),
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::TooShort(n) => {
                write!(f, "record is {n} bytes, shorter than its {HEADER_LEN}-byte envelope")
            }
            EnvelopeError::NewerFormat(v) => write!(
                f,
                "record is in journal format {v}, written by a newer stepwise; this one reads up to format {FORMAT_VERSION}"
            ),
            EnvelopeError::BadFormat(v) => write!(f, "record has format version {v}, which does not exist"),
            EnvelopeError::UnknownKind(k) => write!(
                f,
                "record has unknown kind {k} (format {FORMAT_VERSION} knows kinds 1..={})",
                super::record::MAX_KIND
            ),
            EnvelopeError::ChainBroken => write!(
                f,
                "hash chain broken: the record or one before it was changed after it was written"
            ),
            EnvelopeError::Payload(e) => write!(f, "{e}"),
        }
    }
}

/// Hash of one record onto the chain.
pub fn chain(prev: &Link, seq: Seq, head: &[u8], payload: &[u8]) -> Link {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_le_bytes());
    h.update(head);
    h.update(payload);
    h.finalize().into()
}

/// Build the stored bytes of `record`, linked after `prev`.
pub fn encode(
    prev: &Link,
    seq: Seq,
    run: RunId,
    at_ms: u64,
    record: &Record,
) -> Result<(Vec<u8>, Link), postcard::Error> {
    let payload = record.encode_payload()?;
    let mut head = Vec::with_capacity(20);
    head.extend_from_slice(&record.format().to_le_bytes());
    head.extend_from_slice(&record.kind().to_le_bytes());
    head.extend_from_slice(&run.to_le_bytes());
    head.extend_from_slice(&at_ms.to_le_bytes());
    let link = chain(prev, seq, &head, &payload);
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(&link);
    bytes.extend_from_slice(&payload);
    Ok((bytes, link))
}

/// Decode and check the stored bytes of record `seq`, whose predecessor's link is `prev`.
/// Never panics, whatever the bytes.
pub fn decode(prev: &Link, seq: Seq, bytes: &[u8]) -> Result<Stored, EnvelopeError> {
    if bytes.len() < HEADER_LEN {
        return Err(EnvelopeError::TooShort(bytes.len()));
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let (head, rest) = bytes.split_at(20);
    let (stored_link, payload) = rest.split_at(32);
    // The chain first: a flipped version or kind is damage, not a newer stepwise.
    let link = chain(prev, seq, head, payload);
    let version = u16_at(0);
    let kind = u16_at(2);
    if link.as_slice() != stored_link {
        // A newer format may hash differently: say "newer" rather than "broken" for it.
        if version > FORMAT_VERSION {
            return Err(EnvelopeError::NewerFormat(version));
        }
        return Err(EnvelopeError::ChainBroken);
    }
    match version {
        0 => return Err(EnvelopeError::BadFormat(0)),
        1..=FORMAT_VERSION => {}
        v => return Err(EnvelopeError::NewerFormat(v)),
    }
    let record = Record::decode_payload(version, kind, payload)
        .map_err(|e| EnvelopeError::Payload(e.to_string()))?
        .ok_or(EnvelopeError::UnknownKind(kind))?;
    Ok(Stored {
        seq,
        run: u64_at(4),
        at_ms: u64_at(12),
        record,
        link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::drv::store_path::hex;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The worked example of `journal-format.md` §4, as format 2 writes it.
    #[test]
    fn spec_test_vector() {
        assert_eq!(
            hex(&genesis_link()),
            "e605f92920190f287b46a8aa6fb5238b423df6d4d7074e048cd2a050c4b609ed"
        );
        let r = Record::Done {
            intent: 5,
            added: Some(1 << 20),
            freed: None,
        };
        let (bytes, link) = encode(&genesis_link(), 6, 1, 1_700_000_000_000, &r).unwrap();
        assert_eq!(
            hex(&bytes[..20]),
            "0200060001000000000000000068e5cf8b010000"
        );
        assert_eq!(hex(&bytes[52..]), "050180804000");
        assert_eq!(
            hex(&link),
            "2b945747676a9b3f390f887647c58c17bc054a72ec34948aa374fbc1cdb1058c"
        );
        assert_eq!(decode(&genesis_link(), 6, &bytes).unwrap().record, r);
    }

    /// The same record as format 1 wrote it still decodes.
    #[test]
    fn format_1_test_vector_decodes() {
        let bytes = unhex(concat!(
            "0100060001000000000000000068e5cf8b010000",
            "8b330daa801757e7541b7c54e1f487018dd58001ca80d5a3bc1358aa4402646f",
            "050180804000"
        ));
        let s = decode(&genesis_link(), 6, &bytes).unwrap();
        assert_eq!(
            s.record,
            Record::Done {
                intent: 5,
                added: Some(1 << 20),
                freed: None,
            }
        );
    }

    /// Format 1 had no `pinDerivations` or `releaseRoots`: a format-1 record holding one is damage.
    #[test]
    fn format_1_record_with_a_format_2_transition_is_refused() {
        let r = Record::Intent {
            transition: crate::effects::journal::Transition::ReleaseRoots { dir: "/r".into() },
        };
        let payload = r.encode_payload().unwrap();
        let mut head = Vec::new();
        head.extend_from_slice(&1u16.to_le_bytes());
        head.extend_from_slice(&5u16.to_le_bytes());
        head.extend_from_slice(&1u64.to_le_bytes());
        head.extend_from_slice(&0u64.to_le_bytes());
        let link = chain(&genesis_link(), 1, &head, &payload);
        let bytes = [head.as_slice(), &link, &payload].concat();
        assert!(matches!(
            decode(&genesis_link(), 1, &bytes),
            Err(EnvelopeError::Payload(_))
        ));
    }
}
