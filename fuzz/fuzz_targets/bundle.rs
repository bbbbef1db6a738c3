//! cargo-fuzz target `bundle`: see `bulwark_fuzz::bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bulwark_fuzz::bundle(data);
});
