//! Journal record decoding never panics, whatever the bytes, and what decodes re-encodes to a
//! record that decodes to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stepwise::effects::journal::envelope::{self, genesis_link};
use stepwise::effects::journal::Record;

fuzz_target!(|data: &[u8]| {
    // The whole envelope (the chain will mostly refuse it, but nothing may panic).
    let _ = envelope::decode(&genesis_link(), 1, data);

    // The payload decoders directly: the first two bytes choose the kind.
    if data.len() >= 2 {
        let kind = u16::from_le_bytes([data[0], data[1]]) % 12;
        if let Ok(Some(record)) = Record::decode_payload(kind, &data[2..]) {
            assert_eq!(record.kind(), kind);
            let bytes = record.encode_payload().expect("a decoded record encodes");
            let again = Record::decode_payload(kind, &bytes)
                .expect("re-encoded record decodes")
                .expect("known kind");
            assert_eq!(again, record);
            // Through a full envelope with a correct link, too.
            let (env, _) = envelope::encode(&genesis_link(), 7, 3, 42, &record).unwrap();
            assert_eq!(envelope::decode(&genesis_link(), 7, &env).unwrap().record, record);
        }
    }
});
