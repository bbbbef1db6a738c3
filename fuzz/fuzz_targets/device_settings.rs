//! cargo-fuzz target `device_settings`: see `bulwark_fuzz::device_settings`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bulwark_fuzz::device_settings(data);
});
