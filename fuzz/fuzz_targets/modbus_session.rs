//! cargo-fuzz target `modbus_session`: see `bulwark_fuzz::gateway::modbus_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bulwark_fuzz::modbus_session(data);
});
