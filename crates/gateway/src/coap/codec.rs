//! CoAP message parsing and encoding (RFC 7252 §3), without sockets.
//!
//! Written by hand rather than with `coap-lite` because the gateway must
//! be strict where a library is lenient: every format error of §3 is an
//! error here (token length 9–15, nibble 15 outside the payload marker,
//! option numbers past 65 535, a payload marker with nothing after it, an
//! Empty message with bytes after the header), and the gateway's caps
//! (datagram size, option count, option bytes, Uri-Path segments) are
//! checked while walking the bytes, before anything is allocated for
//! them. A parsed [`Message`] borrows from the datagram.

/// Largest datagram accepted: RFC 7252 §4.6's 1152-byte message size
/// for an unfragmented path.
pub const MAX_DATAGRAM: usize = 1152;
/// Longest token (§3: 0 to 8 bytes).
pub const MAX_TOKEN: usize = 8;
/// Most options in one message.
pub const MAX_OPTIONS: usize = 32;
/// Most bytes of encoded options (headers, extended fields and values).
pub const MAX_OPTION_BYTES: usize = 1024;
/// Most Uri-Path segments.
pub const MAX_PATH_SEGMENTS: usize = 16;
/// Longest Uri-Path segment (§5.10: 0–255 bytes).
pub const MAX_SEGMENT: usize = 255;

/// Option numbers the gateway looks at (RFC 7252 §5.10, RFC 7959,
/// RFC 9175).
pub mod option {
    /// Uri-Host.
    pub const URI_HOST: u16 = 3;
    /// Uri-Path, one per segment.
    pub const URI_PATH: u16 = 11;
    /// Content-Format.
    pub const CONTENT_FORMAT: u16 = 12;
    /// Block2 (RFC 7959).
    pub const BLOCK2: u16 = 23;
    /// Block1 (RFC 7959).
    pub const BLOCK1: u16 = 27;
    /// Proxy-Uri: names a resource other than the Uri-Path one.
    pub const PROXY_URI: u16 = 35;
    /// Proxy-Scheme.
    pub const PROXY_SCHEME: u16 = 39;
    /// Echo (RFC 9175 §2.2).
    pub const ECHO: u16 = 252;
}

/// The message type (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Confirmable.
    Confirmable,
    /// Non-confirmable.
    NonConfirmable,
    /// Acknowledgement.
    Acknowledgement,
    /// Reset.
    Reset,
}

impl MessageType {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Self::Confirmable,
            1 => Self::NonConfirmable,
            2 => Self::Acknowledgement,
            _ => Self::Reset,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::Confirmable => 0,
            Self::NonConfirmable => 1,
            Self::Acknowledgement => 2,
            Self::Reset => 3,
        }
    }
}

/// A message code, `class.detail` (§3, §12.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub u8);

impl Code {
    /// 0.00: an Empty message.
    pub const EMPTY: Self = Self(0);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Self = Self::new(4, 3);

    /// `class.detail`.
    pub const fn new(class: u8, detail: u8) -> Self {
        Self((class << 5) | (detail & 0x1f))
    }

    /// The class (0 request, 2 success, 4 client error, 5 server error).
    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail.
    pub fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// The request method, if this is a request code.
    pub fn method(self) -> Option<Method> {
        Method::from_code(self)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

/// Request methods (RFC 7252 §12.1.1, RFC 8132).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// 0.01
    Get,
    /// 0.02
    Post,
    /// 0.03
    Put,
    /// 0.04
    Delete,
    /// 0.05
    Fetch,
    /// 0.06
    Patch,
    /// 0.07
    IPatch,
}

impl Method {
    /// Every method, in code order.
    pub const ALL: [Self; 7] = [
        Self::Get,
        Self::Post,
        Self::Put,
        Self::Delete,
        Self::Fetch,
        Self::Patch,
        Self::IPatch,
    ];

    /// The method a request code stands for.
    pub fn from_code(code: Code) -> Option<Self> {
        if code.class() != 0 {
            return None;
        }
        Self::ALL
            .get(usize::from(code.detail()).checked_sub(1)?)
            .copied()
    }

    /// Its name, as in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Fetch => "FETCH",
            Self::Patch => "PATCH",
            Self::IPatch => "IPATCH",
        }
    }

    /// Its code.
    pub fn code(self) -> Code {
        let detail = Self::ALL.iter().position(|m| *m == self).unwrap_or(0);
        Code::new(0, u8::try_from(detail + 1).unwrap_or(0))
    }
}

/// Why a datagram is not an acceptable CoAP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes is over {MAX_DATAGRAM}")]
    TooLarge(usize),
    /// Shorter than the 4-byte header, or the token runs past the end.
    #[error("datagram ends inside the header or token")]
    Truncated,
    /// Version is not 1.
    #[error("version {0} is not 1")]
    Version(u8),
    /// Token length 9–15 (a message format error, §3).
    #[error("token length {0} is over 8")]
    TokenLength(u8),
    /// An Empty message (0.00) with a token, options or payload (§4.1).
    #[error("Empty message with bytes after the header")]
    EmptyNotEmpty,
    /// Option delta or length nibble 15 that is not the payload marker.
    #[error("option {which} nibble 15 outside the payload marker")]
    ReservedNibble {
        /// "delta" or "length".
        which: &'static str,
    },
    /// An option's extended fields or value run past the datagram end.
    #[error("option runs past the end of the datagram")]
    OptionTruncated,
    /// The option number passes 65 535.
    #[error("option number past 65535")]
    OptionNumberOverflow,
    /// A payload marker followed by no payload (§3).
    #[error("payload marker with an empty payload")]
    EmptyPayload,
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    /// More than [`MAX_OPTION_BYTES`] of options.
    #[error("more than {MAX_OPTION_BYTES} bytes of options")]
    OptionBytes,
    /// More than [`MAX_PATH_SEGMENTS`] Uri-Path options.
    #[error("more than {MAX_PATH_SEGMENTS} Uri-Path segments")]
    PathSegments,
    /// A Uri-Path segment over [`MAX_SEGMENT`] bytes.
    #[error("Uri-Path segment of {0} bytes is over {MAX_SEGMENT}")]
    SegmentLength(usize),
}

/// One option, its value borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoapOption<'a> {
    /// Option number.
    pub number: u16,
    /// Value bytes.
    pub value: &'a [u8],
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Type.
    pub mtype: MessageType,
    /// Code.
    pub code: Code,
    /// Message id.
    pub message_id: u16,
    /// Token, 0–8 bytes.
    pub token: &'a [u8],
    /// Options in ascending number order (the encoding guarantees it).
    pub options: Vec<CoapOption<'a>>,
    /// Payload; empty when there was no payload marker.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// Values of every option numbered `number`, in order.
    pub fn option_values(&self, number: u16) -> impl Iterator<Item = &'a [u8]> + Clone + '_ {
        self.options
            .iter()
            .filter(move |o| o.number == number)
            .map(|o| o.value)
    }

    /// Whether an option numbered `number` is present.
    pub fn has_option(&self, number: u16) -> bool {
        self.options.iter().any(|o| o.number == number)
    }

    /// The Uri-Path segments.
    pub fn path(&self) -> impl Iterator<Item = &'a [u8]> + Clone + '_ {
        self.option_values(option::URI_PATH)
    }
}

/// Reads an option delta or length: the nibble, then its 13/14 extended
/// form. Nibble 15 is the caller's business (payload marker or error).
fn extended(nibble: u8, bytes: &[u8], at: &mut usize) -> Result<u32, CodecError> {
    match nibble {
        13 => {
            let b = *bytes.get(*at).ok_or(CodecError::OptionTruncated)?;
            *at += 1;
            Ok(u32::from(b) + 13)
        }
        14 => {
            let hi = *bytes.get(*at).ok_or(CodecError::OptionTruncated)?;
            let lo = *bytes.get(*at + 1).ok_or(CodecError::OptionTruncated)?;
            *at += 2;
            Ok(u32::from(u16::from_be_bytes([hi, lo])) + 269)
        }
        n => Ok(u32::from(n)),
    }
}

/// Parses one datagram.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, CodecError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let [b0, code, id_hi, id_lo] = *bytes.first_chunk::<4>().ok_or(CodecError::Truncated)?;
    let version = b0 >> 6;
    if version != 1 {
        return Err(CodecError::Version(version));
    }
    let tkl = b0 & 0x0f;
    if usize::from(tkl) > MAX_TOKEN {
        return Err(CodecError::TokenLength(tkl));
    }
    let code = Code(code);
    let token = bytes
        .get(4..4 + usize::from(tkl))
        .ok_or(CodecError::Truncated)?;
    if code == Code::EMPTY && bytes.len() != 4 {
        return Err(CodecError::EmptyNotEmpty);
    }
    let start = 4 + usize::from(tkl);
    let mut at = start;
    let mut number: u32 = 0;
    let mut count = 0usize;
    let mut segments = 0usize;
    // First pass: validate and count, so the options vector is allocated
    // once with a size already known to be within the cap.
    let mut payload: &[u8] = &[];
    while let Some(&head) = bytes.get(at) {
        if head == 0xff {
            payload = bytes.get(at + 1..).unwrap_or_default();
            if payload.is_empty() {
                return Err(CodecError::EmptyPayload);
            }
            break;
        }
        at += 1;
        let (dn, ln) = (head >> 4, head & 0x0f);
        if dn == 15 {
            return Err(CodecError::ReservedNibble { which: "delta" });
        }
        if ln == 15 {
            return Err(CodecError::ReservedNibble { which: "length" });
        }
        let delta = extended(dn, bytes, &mut at)?;
        let len = extended(ln, bytes, &mut at)?;
        number += delta;
        if number > u32::from(u16::MAX) {
            return Err(CodecError::OptionNumberOverflow);
        }
        let len = usize::try_from(len).map_err(|_| CodecError::OptionTruncated)?;
        if bytes.len() < at || bytes.len() - at < len {
            return Err(CodecError::OptionTruncated);
        }
        at += len;
        count += 1;
        if count > MAX_OPTIONS {
            return Err(CodecError::TooManyOptions);
        }
        if at - start > MAX_OPTION_BYTES {
            return Err(CodecError::OptionBytes);
        }
        if number == u32::from(option::URI_PATH) {
            segments += 1;
            if segments > MAX_PATH_SEGMENTS {
                return Err(CodecError::PathSegments);
            }
            if len > MAX_SEGMENT {
                return Err(CodecError::SegmentLength(len));
            }
        }
    }
    // Second pass over bytes already validated.
    let mut options = Vec::with_capacity(count);
    let mut at = start;
    let mut number: u32 = 0;
    for _ in 0..count {
        let head = *bytes.get(at).ok_or(CodecError::OptionTruncated)?;
        at += 1;
        number += extended(head >> 4, bytes, &mut at)?;
        let len = usize::try_from(extended(head & 0x0f, bytes, &mut at)?)
            .map_err(|_| CodecError::OptionTruncated)?;
        let value = bytes.get(at..at + len).ok_or(CodecError::OptionTruncated)?;
        at += len;
        options.push(CoapOption {
            number: u16::try_from(number).map_err(|_| CodecError::OptionNumberOverflow)?,
            value,
        });
    }
    Ok(Message {
        mtype: MessageType::from_bits(b0 >> 4),
        code,
        message_id: u16::from_be_bytes([id_hi, id_lo]),
        token,
        options,
        payload,
    })
}

fn nibble(v: usize, ext: &mut Vec<u8>) -> u8 {
    if v < 13 {
        v as u8
    } else if v < 269 {
        ext.push((v - 13) as u8);
        13
    } else {
        ext.extend_from_slice(&u16::try_from(v - 269).unwrap_or(u16::MAX).to_be_bytes());
        14
    }
}

/// Encodes a message. Options are written in ascending number order
/// (stable for repeated options); a token over 8 bytes is cut to 8.
/// Used for the gateway's own 4.03 answers and by tests; it does not
/// enforce the parser's caps, so tests can build over-the-cap input.
pub fn encode(
    mtype: MessageType,
    code: Code,
    message_id: u16,
    token: &[u8],
    options: &[(u16, &[u8])],
    payload: &[u8],
) -> Vec<u8> {
    let token = token.get(..token.len().min(MAX_TOKEN)).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + token.len() + payload.len() + 1 + options.len() * 4);
    out.push(0x40 | (mtype.bits() << 4) | token.len() as u8);
    out.push(code.0);
    out.extend_from_slice(&message_id.to_be_bytes());
    out.extend_from_slice(token);
    let mut sorted = options.to_vec();
    sorted.sort_by_key(|(n, _)| *n);
    let mut last = 0u16;
    for (number, value) in sorted {
        let mut ext = Vec::new();
        let d = nibble(usize::from(number - last), &mut ext);
        let l = nibble(value.len(), &mut ext);
        out.push((d << 4) | l);
        out.extend_from_slice(&ext);
        out.extend_from_slice(value);
        last = number;
    }
    if !payload.is_empty() {
        out.push(0xff);
        out.extend_from_slice(payload);
    }
    out
}

/// The piggybacked 4.03 Forbidden answer to a refused Confirmable
/// request: an ACK with the request's message id and token.
pub fn forbidden(request: &Message<'_>) -> Vec<u8> {
    encode(
        MessageType::Acknowledgement,
        Code::FORBIDDEN,
        request.message_id,
        request.token,
        &[],
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &[&str]) -> Vec<u8> {
        let opts: Vec<(u16, &[u8])> = path
            .iter()
            .map(|s| (option::URI_PATH, s.as_bytes()))
            .collect();
        encode(
            MessageType::Confirmable,
            Method::Get.code(),
            7,
            b"tok",
            &opts,
            &[],
        )
    }

    #[test]
    fn a_request_round_trips() {
        let bytes = encode(
            MessageType::Confirmable,
            Method::Put.code(),
            0x1234,
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[
                (option::URI_PATH, b"sensors"),
                (option::CONTENT_FORMAT, &[50]),
                (option::URI_PATH, b"temp"),
                (option::ECHO, b"e"),
            ],
            b"21.5",
        );
        let m = parse(&bytes).unwrap();
        assert_eq!(m.mtype, MessageType::Confirmable);
        assert_eq!(m.code.method(), Some(Method::Put));
        assert_eq!(m.message_id, 0x1234);
        assert_eq!(m.token, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(m.path().collect::<Vec<_>>(), [&b"sensors"[..], b"temp"]);
        assert!(m.has_option(option::ECHO));
        assert_eq!(m.payload, b"21.5");
        let nums: Vec<u16> = m.options.iter().map(|o| o.number).collect();
        assert_eq!(nums, [11, 11, 12, 252]);
    }

    #[test]
    fn header_errors() {
        assert_eq!(parse(&[0x40, 1, 0]), Err(CodecError::Truncated));
        assert_eq!(parse(&[0x80, 1, 0, 0]), Err(CodecError::Version(2)));
        assert_eq!(parse(&[0x00, 1, 0, 0]), Err(CodecError::Version(0)));
        // Token length 8 is the maximum; 9..=15 are format errors.
        let mut eight = vec![0x48, 1, 0, 0];
        eight.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&eight).unwrap().token.len(), 8);
        for tkl in 9u8..=15 {
            let mut bytes = vec![0x40 | tkl, 1, 0, 0];
            bytes.extend_from_slice(&[0; 15]);
            assert_eq!(parse(&bytes), Err(CodecError::TokenLength(tkl)));
        }
        assert_eq!(parse(&[0x42, 1, 0, 0, 9]), Err(CodecError::Truncated));
        // Empty message: header only.
        assert_eq!(parse(&[0x60, 0, 0, 1]).unwrap().code, Code::EMPTY);
        assert_eq!(parse(&[0x61, 0, 0, 1, 5]), Err(CodecError::EmptyNotEmpty));
    }

    #[test]
    fn nibble_15_is_only_the_payload_marker() {
        // Delta 15 with length 0 (0xf0) and length 15 (0x1f).
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0xf0]),
            Err(CodecError::ReservedNibble { which: "delta" })
        );
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0x1f, 0]),
            Err(CodecError::ReservedNibble { which: "length" })
        );
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0xbf, 0]),
            Err(CodecError::ReservedNibble { which: "length" })
        );
        assert_eq!(parse(&[0x40, 1, 0, 0, 0xff, b'x']).unwrap().payload, b"x");
    }

    #[test]
    fn payload_marker_needs_a_payload() {
        assert_eq!(parse(&[0x40, 1, 0, 0, 0xff]), Err(CodecError::EmptyPayload));
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0xb1, b'a', 0xff]),
            Err(CodecError::EmptyPayload)
        );
        assert!(
            parse(&[0x40, 1, 0, 0, 0xb1, b'a'])
                .unwrap()
                .payload
                .is_empty()
        );
    }

    #[test]
    fn extended_option_forms() {
        // Delta 13: one extra byte, number 13 + b.
        let m = parse(&[0x40, 1, 0, 0, 0xd0, 239]).unwrap();
        assert_eq!(m.options[0].number, 252);
        // Delta 14: two extra bytes, number 269 + n.
        let m = parse(&[0x40, 1, 0, 0, 0xe0, 0xfe, 0xf2]).unwrap();
        assert_eq!(m.options[0].number, 65_535);
        // Past 65535: 269 + 65267 = 65536.
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0xe0, 0xfe, 0xf3]),
            Err(CodecError::OptionNumberOverflow)
        );
        // Two deltas that sum past 65535.
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0xe0, 0xfe, 0xf2, 0x10]),
            Err(CodecError::OptionNumberOverflow)
        );
        // Length 13 and 14 forms, exactly at their thresholds.
        for len in [12usize, 13, 268, 269, 300] {
            let v = vec![b'x'; len];
            let bytes = encode(
                MessageType::Confirmable,
                Code::new(0, 2),
                1,
                &[],
                &[(60, &v)],
                &[],
            );
            assert_eq!(parse(&bytes).unwrap().options[0].value.len(), len, "{len}");
            // One byte short: the value runs past the end.
            assert_eq!(
                parse(&bytes[..bytes.len() - 1]),
                Err(CodecError::OptionTruncated),
                "{len}"
            );
        }
        // Extended fields themselves cut off.
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0xd0]),
            Err(CodecError::OptionTruncated)
        );
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0x0e, 0]),
            Err(CodecError::OptionTruncated)
        );
        // A length far past the datagram end.
        assert_eq!(
            parse(&[0x40, 1, 0, 0, 0x0e, 0xff, 0xff, 1]),
            Err(CodecError::OptionTruncated)
        );
    }

    #[test]
    fn caps_just_inside_and_outside() {
        // Datagram size.
        let fits = encode(
            MessageType::NonConfirmable,
            Code::new(0, 2),
            1,
            &[],
            &[],
            &vec![0; MAX_DATAGRAM - 5],
        );
        assert_eq!(fits.len(), MAX_DATAGRAM);
        assert!(parse(&fits).is_ok());
        let mut over = fits.clone();
        over.push(0);
        assert_eq!(parse(&over), Err(CodecError::TooLarge(MAX_DATAGRAM + 1)));
        // Option count (Uri-Query, 15, so the path cap is not hit first).
        let opts = vec![(15u16, &b"q"[..]); MAX_OPTIONS];
        let msg = |opts: &[(u16, &[u8])]| {
            encode(MessageType::Confirmable, Code::new(0, 1), 1, &[], opts, &[])
        };
        assert_eq!(parse(&msg(&opts)).unwrap().options.len(), MAX_OPTIONS);
        let opts = vec![(15u16, &b"q"[..]); MAX_OPTIONS + 1];
        assert_eq!(parse(&msg(&opts)), Err(CodecError::TooManyOptions));
        // Option bytes: 256 + 3 * 255 for four 253-byte values (the first
        // with an extended delta), plus 1 + 2 for a 2-byte one: 1024.
        let v = vec![b'q'; 253];
        let mut opts = vec![(15u16, &v[..]); 4];
        opts.push((15, b"ab"));
        let bytes = msg(&opts);
        assert_eq!(bytes.len() - 4, MAX_OPTION_BYTES);
        assert!(parse(&bytes).is_ok());
        opts.pop();
        opts.push((15, b"abc"));
        assert_eq!(parse(&msg(&opts)), Err(CodecError::OptionBytes));
        // Uri-Path segments: count and length.
        let segs = vec!["s"; MAX_PATH_SEGMENTS];
        assert_eq!(parse(&get(&segs)).unwrap().path().count(), 16);
        let segs = vec!["s"; MAX_PATH_SEGMENTS + 1];
        assert_eq!(parse(&get(&segs)), Err(CodecError::PathSegments));
        // Hundreds of Uri-Path options (the case): refused.
        let segs = vec!["s"; 300];
        assert!(parse(&get(&segs)).is_err());
        let seg = "x".repeat(MAX_SEGMENT);
        assert!(parse(&get(&[&seg])).is_ok());
        let seg = "x".repeat(MAX_SEGMENT + 1);
        assert_eq!(
            parse(&get(&[&seg])),
            Err(CodecError::SegmentLength(MAX_SEGMENT + 1))
        );
    }

    #[test]
    fn forbidden_echoes_id_and_token() {
        let bytes = get(&["a"]);
        let req = parse(&bytes).unwrap();
        let resp = forbidden(&req);
        let m = parse(&resp).unwrap();
        assert_eq!(m.mtype, MessageType::Acknowledgement);
        assert_eq!(m.code, Code::FORBIDDEN);
        assert_eq!(m.code.to_string(), "4.03");
        assert_eq!((m.message_id, m.token), (7, &b"tok"[..]));
    }

    #[test]
    fn methods_map_to_codes() {
        for m in Method::ALL {
            assert_eq!(Method::from_code(m.code()), Some(m));
        }
        assert_eq!(Method::from_code(Code::new(0, 0)), None);
        assert_eq!(Method::from_code(Code::new(0, 8)), None);
        assert_eq!(Method::from_code(Code::new(2, 5)), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1400)) {
            let _ = parse(&bytes);
        }
    }
}
