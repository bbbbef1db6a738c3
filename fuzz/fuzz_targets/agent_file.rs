//! cargo-fuzz target `agent_file`: see `bulwark_fuzz::agent_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bulwark_fuzz::agent_file(data);
});
