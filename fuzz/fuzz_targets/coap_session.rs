//! cargo-fuzz target `coap_session`: see `bulwark_fuzz::gateway::coap_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bulwark_fuzz::coap_session(data);
});
