//! cargo-fuzz target `mqtt_session`: see `bulwark_fuzz::gateway::mqtt_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bulwark_fuzz::mqtt_session(data);
});
