//! The byte format of a TPM-sealed secret, kept apart from the TPM calls
//! so that the parser can be tested (and fuzzed) without a TPM.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "BWTS" (Bulwark TPM Sealed)
//! 4       1     format version (1)
//! 5       2     n: length of the public section, big-endian
//! 7       n     TPM2B_PUBLIC of the sealed data object (marshalled)
//! 7+n     2     m: length of the private section, big-endian
//! 9+n     m     contents of the TPM2B_PRIVATE (the TPM's encrypted blob)
//! ```
//!
//! Nothing may follow the private section. The format carries no
//! integrity check of its own: the TPM checks the private blob's HMAC,
//! which also covers the object's name and so the whole public area.

/// First bytes of every sealed secret.
const MAGIC: &[u8; 4] = b"BWTS";
/// The only format version written and read.
const VERSION: u8 = 1;
/// Bytes before the public section: magic, version, length.
const HEADER_LEN: usize = MAGIC.len() + 1 + 2;

/// The two TPM structures inside a sealed secret, still marshalled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Sections<'a> {
    /// Marshalled TPM2B_PUBLIC.
    pub(crate) public: &'a [u8],
    /// Contents of the TPM2B_PRIVATE.
    pub(crate) private: &'a [u8],
}

/// Lays out a sealed secret. Fails only if a section exceeds 64 KiB,
/// which no TPM structure does.
pub(crate) fn encode(public: &[u8], private: &[u8]) -> Result<Vec<u8>, String> {
    let public_len = section_len(public, "public")?;
    let private_len = section_len(private, "private")?;
    let mut out = Vec::with_capacity(HEADER_LEN + public.len() + 2 + private.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&public_len.to_be_bytes());
    out.extend_from_slice(public);
    out.extend_from_slice(&private_len.to_be_bytes());
    out.extend_from_slice(private);
    Ok(out)
}

/// Splits a sealed secret into its sections, rejecting anything that is
/// not exactly the layout above. The reason names what is wrong and
/// never quotes the blob.
pub(crate) fn decode(blob: &[u8]) -> Result<Sections<'_>, String> {
    let rest = blob
        .strip_prefix(MAGIC)
        .ok_or_else(|| "not a TPM-sealed secret (bad magic)".to_owned())?;
    let (&version, rest) = rest
        .split_first()
        .ok_or_else(|| "truncated before the format version".to_owned())?;
    if version != VERSION {
        return Err(format!(
            "format version {version} is not supported (expected {VERSION})"
        ));
    }
    let (public, rest) = take_section(rest, "public")?;
    let (private, rest) = take_section(rest, "private")?;
    if !rest.is_empty() {
        return Err(format!(
            "{} unexpected bytes after the private section",
            rest.len()
        ));
    }
    Ok(Sections { public, private })
}

fn section_len(section: &[u8], what: &str) -> Result<u16, String> {
    u16::try_from(section.len())
        .map_err(|_| format!("{what} section of {} bytes is too long", section.len()))
}

fn take_section<'a>(bytes: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (len, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| format!("truncated before the {what} section length"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len == 0 {
        return Err(format!("the {what} section is empty"));
    }
    if rest.len() < len {
        return Err(format!(
            "the {what} section claims {len} bytes but only {} remain",
            rest.len()
        ));
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let blob = encode(b"pub", b"private").unwrap();
        assert_eq!(&blob[..5], b"BWTS\x01");
        assert_eq!(
            decode(&blob).unwrap(),
            Sections {
                public: b"pub",
                private: b"private"
            }
        );
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        let blob = encode(b"public-area", b"private-blob").unwrap();
        for len in 0..blob.len() {
            assert!(
                decode(&blob[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("unexpected bytes"));
    }

    #[test]
    fn header_damage_is_named() {
        let blob = encode(b"p", b"q").unwrap();
        let mut bad = blob.clone();
        bad[0] ^= 1;
        assert!(decode(&bad).unwrap_err().contains("magic"));
        let mut bad = blob.clone();
        bad[4] = 2;
        assert!(decode(&bad).unwrap_err().contains("version 2"));
        let mut bad = blob;
        bad[6] = 0xff;
        assert!(decode(&bad).unwrap_err().contains("claims"));
        assert!(decode(&encode(b"", b"q").unwrap()).is_err());
    }
}
