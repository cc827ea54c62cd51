//! The `.drv` parser on arbitrary bytes: never panics, and whatever parses writes back to the
//! same bytes. Hashing, validation and JSON of what parses must not panic either.
//!
//! Seed corpus: the golden fixtures with their store dir turned into /nix/store:
//! `mkdir -p corpus/drv_parse && for f in ../tests/fixtures/drv/golden/*.drv; do
//!  sed 's|/tmp/stepwise-drv-fixtures/store|/nix/store|g' $f > corpus/drv_parse/$(basename $f); done`
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use stepwise::drv::{self, Hasher, StoreDir};
use stepwise::effects::nix::add_derivation::{derivation_json, JsonShape};

fuzz_target!(|data: &[u8]| {
    let sd = StoreDir::new("/nix/store").unwrap();
    let Ok(d) = drv::parse(data, &sd) else {
        return;
    };
    assert_eq!(drv::to_aterm(&d, &sd), data, "write(parse(b)) != b");
    let name = d.name_from_env().unwrap_or_else(|| "fuzz".into());
    let _ = drv::validate(&d, &sd, &name);
    let _ = drv::drv_path(&sd, &name, &d);
    let mut h = Hasher::new(sd.clone(), HashMap::new());
    let _ = h.output_paths(&d, &name);
    let _ = derivation_json(JsonShape::Nix2_33, &sd, &name, &d);
});
