//! SoftHSM2 tokens for tests (filled in by the PKCS#11 backend work).
