//! Modbus TCP framing (MBAP header) and request parsing, without sockets.
//!
//! Every limit is checked on the 7-byte header before the body is waited
//! for, and the body is only ever borrowed from the read buffer, so a
//! peer cannot make the gateway allocate more than one frame (260 bytes).
//! The MBAP length must equal exactly what the function code and its
//! counts imply: a request whose length also covers a second PDU (request
//! smuggling) is malformed, not forwarded.

/// MBAP header length (transaction id, protocol id, length, unit id).
pub const MBAP_LEN: usize = 7;
/// Largest MBAP length field: unit id plus a 253-byte PDU.
pub const MAX_LENGTH_FIELD: u16 = 254;
/// Smallest MBAP length field: unit id plus a function code.
pub const MIN_LENGTH_FIELD: u16 = 2;
/// Largest whole frame.
pub const MAX_FRAME: usize = 6 + MAX_LENGTH_FIELD as usize;

/// Quantity limits of the Modbus application protocol (v1.1b3, §6).
pub mod limits {
    /// FC 1/2: coils or discrete inputs per read.
    pub const READ_BITS: u16 = 2000;
    /// FC 3/4 (and the read half of FC 23): registers per read.
    pub const READ_REGISTERS: u16 = 125;
    /// FC 15: coils per write.
    pub const WRITE_COILS: u16 = 1968;
    /// FC 16: registers per write.
    pub const WRITE_REGISTERS: u16 = 123;
    /// FC 23: registers in the write half.
    pub const READ_WRITE_WRITE_REGISTERS: u16 = 121;
}

/// Why bytes are not an acceptable Modbus TCP frame or request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The MBAP protocol id is not 0 (Modbus).
    #[error("protocol id {0} is not 0")]
    ProtocolId(u16),
    /// The MBAP length is outside 2..=254.
    #[error("MBAP length {0} is outside 2..=254")]
    Length(u16),
    /// A function code with the exception bit set, from a client.
    #[error("function code {0:#04x} is a response code")]
    ResponseCode(u8),
    /// The PDU length is not the one the function code implies.
    #[error("function {function}: PDU of {actual} bytes, expected {expected}")]
    PduLength {
        /// Function code.
        function: u8,
        /// Bytes the MBAP length announced for the PDU.
        actual: usize,
        /// Bytes the function and its counts imply.
        expected: usize,
    },
    /// A quantity outside the function's limits.
    #[error("function {function}: quantity {quantity} is outside 1..={max}")]
    Quantity {
        /// Function code.
        function: u8,
        /// The quantity asked for.
        quantity: u16,
        /// The function's maximum.
        max: u16,
    },
    /// The byte count disagrees with the quantity.
    #[error("function {function}: byte count {actual}, quantity implies {expected}")]
    ByteCount {
        /// Function code.
        function: u8,
        /// The byte count field.
        actual: u8,
        /// What the quantity implies.
        expected: usize,
    },
    /// Start address plus quantity is past 65 536.
    #[error("function {function}: address {address} + quantity {quantity} is past 65536")]
    AddressOverflow {
        /// Function code.
        function: u8,
        /// Start address.
        address: u16,
        /// Quantity.
        quantity: u16,
    },
    /// FC 5 with a value other than 0x0000 or 0xFF00.
    #[error("write single coil value {0:#06x} is not 0x0000 or 0xFF00")]
    CoilValue(u16),
    /// A response whose PDU does not fit its request.
    #[error("response: {0}")]
    Response(&'static str),
}

/// The MBAP header of one frame, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mbap {
    /// Transaction id (echoed by the server).
    pub transaction: u16,
    /// Unit (slave) id.
    pub unit: u8,
    /// Length field: unit id plus PDU.
    pub length: u16,
}

impl Mbap {
    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        6 + usize::from(self.length)
    }

    /// Bytes of the PDU (function code and data).
    pub fn pdu_len(&self) -> usize {
        usize::from(self.length) - 1
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let hi = *b.get(at)?;
    let lo = *b.get(at + 1)?;
    Some(u16::from_be_bytes([hi, lo]))
}

/// Reads the MBAP header at the start of `buf`. `Ok(None)`: not all 7
/// bytes are here yet (the protocol id and length are checked as soon as
/// their bytes arrive, so a bad header is refused without waiting).
pub fn frame_header(buf: &[u8]) -> Result<Option<Mbap>, FrameError> {
    if let Some(protocol) = be16(buf, 2)
        && protocol != 0
    {
        return Err(FrameError::ProtocolId(protocol));
    }
    if let Some(length) = be16(buf, 4)
        && !(MIN_LENGTH_FIELD..=MAX_LENGTH_FIELD).contains(&length)
    {
        return Err(FrameError::Length(length));
    }
    let (Some(transaction), Some(length), Some(&unit)) = (be16(buf, 0), be16(buf, 4), buf.get(6))
    else {
        return Ok(None);
    };
    Ok(Some(Mbap {
        transaction,
        unit,
        length,
    }))
}

/// One complete frame borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its header.
    pub mbap: Mbap,
    /// Function code and data.
    pub pdu: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The first complete frame in `buf`; `Ok(None)` if it has not all
    /// arrived.
    pub fn split(buf: &'a [u8]) -> Result<Option<Self>, FrameError> {
        let Some(mbap) = frame_header(buf)? else {
            return Ok(None);
        };
        Ok(buf
            .get(MBAP_LEN..mbap.frame_len())
            .map(|pdu| Self { mbap, pdu }))
    }

    /// The function code (the PDU is never empty: length >= 2).
    pub fn function(&self) -> u8 {
        self.pdu.first().copied().unwrap_or(0)
    }
}

/// An address range `start..start+quantity` (quantity >= 1, not past 65 536).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First address.
    pub start: u16,
    /// Number of addresses.
    pub quantity: u16,
}

impl Span {
    /// Last address covered.
    pub fn last(&self) -> u16 {
        // Invariant: built only by `span`, which checks start + quantity <= 65536.
        self.start.saturating_add(self.quantity.saturating_sub(1))
    }
}

/// A parsed request. Write data stays in the frame; only its length was
/// checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// FC 1.
    ReadCoils(Span),
    /// FC 2.
    ReadDiscreteInputs(Span),
    /// FC 3.
    ReadHoldingRegisters(Span),
    /// FC 4.
    ReadInputRegisters(Span),
    /// FC 5 (`true`: 0xFF00).
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// On or off.
        on: bool,
    },
    /// FC 6.
    WriteSingleRegister {
        /// Register address.
        address: u16,
        /// Value.
        value: u16,
    },
    /// FC 15.
    WriteMultipleCoils(Span),
    /// FC 16.
    WriteMultipleRegisters(Span),
    /// FC 23: the write is done before the read.
    ReadWriteMultipleRegisters {
        /// Registers read.
        read: Span,
        /// Registers written.
        write: Span,
    },
    /// Any other function code (diagnostics, device identification,
    /// vendor codes...): not parsed, never allowed by policy.
    Other(u8),
}

impl Request {
    /// The function code.
    pub fn function(&self) -> u8 {
        match self {
            Self::ReadCoils(_) => 1,
            Self::ReadDiscreteInputs(_) => 2,
            Self::ReadHoldingRegisters(_) => 3,
            Self::ReadInputRegisters(_) => 4,
            Self::WriteSingleCoil { .. } => 5,
            Self::WriteSingleRegister { .. } => 6,
            Self::WriteMultipleCoils(_) => 15,
            Self::WriteMultipleRegisters(_) => 16,
            Self::ReadWriteMultipleRegisters { .. } => 23,
            Self::Other(f) => *f,
        }
    }

    /// The address ranges the request touches.
    pub fn spans(&self) -> Vec<Span> {
        match *self {
            Self::ReadCoils(s)
            | Self::ReadDiscreteInputs(s)
            | Self::ReadHoldingRegisters(s)
            | Self::ReadInputRegisters(s)
            | Self::WriteMultipleCoils(s)
            | Self::WriteMultipleRegisters(s) => vec![s],
            Self::WriteSingleCoil { address, .. } | Self::WriteSingleRegister { address, .. } => {
                vec![Span {
                    start: address,
                    quantity: 1,
                }]
            }
            Self::ReadWriteMultipleRegisters { read, write } => vec![read, write],
            Self::Other(_) => Vec::new(),
        }
    }

    /// The PDU length of a normal (non-exception) response, when fixed by
    /// the request.
    pub fn response_pdu_len(&self) -> Option<usize> {
        let bits = |s: Span| 2 + usize::from(s.quantity).div_ceil(8);
        let regs = |s: Span| 2 + 2 * usize::from(s.quantity);
        match *self {
            Self::ReadCoils(s) | Self::ReadDiscreteInputs(s) => Some(bits(s)),
            Self::ReadHoldingRegisters(s) | Self::ReadInputRegisters(s) => Some(regs(s)),
            Self::ReadWriteMultipleRegisters { read, .. } => Some(regs(read)),
            Self::WriteSingleCoil { .. }
            | Self::WriteSingleRegister { .. }
            | Self::WriteMultipleCoils(_)
            | Self::WriteMultipleRegisters(_) => Some(5),
            Self::Other(_) => None,
        }
    }
}

fn exact(function: u8, pdu: &[u8], expected: usize) -> Result<(), FrameError> {
    if pdu.len() == expected {
        Ok(())
    } else {
        Err(FrameError::PduLength {
            function,
            actual: pdu.len(),
            expected,
        })
    }
}

fn field(function: u8, pdu: &[u8], at: usize, expected: usize) -> Result<u16, FrameError> {
    be16(pdu, at).ok_or(FrameError::PduLength {
        function,
        actual: pdu.len(),
        expected,
    })
}

fn span(function: u8, address: u16, quantity: u16, max: u16) -> Result<Span, FrameError> {
    if !(1..=max).contains(&quantity) {
        return Err(FrameError::Quantity {
            function,
            quantity,
            max,
        });
    }
    if u32::from(address) + u32::from(quantity) > 65_536 {
        return Err(FrameError::AddressOverflow {
            function,
            address,
            quantity,
        });
    }
    Ok(Span {
        start: address,
        quantity,
    })
}

fn byte_count(function: u8, pdu: &[u8], at: usize, expected: usize) -> Result<(), FrameError> {
    let actual = pdu.get(at).copied().unwrap_or(0);
    if usize::from(actual) != expected {
        return Err(FrameError::ByteCount {
            function,
            actual,
            expected,
        });
    }
    exact(function, pdu, at + 1 + expected)
}

/// Parses a request PDU (function code first). The PDU must be exactly
/// as long as the function and its counts imply.
pub fn parse_request(pdu: &[u8]) -> Result<Request, FrameError> {
    let Some(&function) = pdu.first() else {
        return Err(FrameError::PduLength {
            function: 0,
            actual: 0,
            expected: 1,
        });
    };
    let read = |max: u16| -> Result<Span, FrameError> {
        exact(function, pdu, 5)?;
        span(
            function,
            field(function, pdu, 1, 5)?,
            field(function, pdu, 3, 5)?,
            max,
        )
    };
    match function {
        1 => read(limits::READ_BITS).map(Request::ReadCoils),
        2 => read(limits::READ_BITS).map(Request::ReadDiscreteInputs),
        3 => read(limits::READ_REGISTERS).map(Request::ReadHoldingRegisters),
        4 => read(limits::READ_REGISTERS).map(Request::ReadInputRegisters),
        5 => {
            exact(function, pdu, 5)?;
            let address = field(function, pdu, 1, 5)?;
            match field(function, pdu, 3, 5)? {
                0x0000 => Ok(Request::WriteSingleCoil { address, on: false }),
                0xFF00 => Ok(Request::WriteSingleCoil { address, on: true }),
                other => Err(FrameError::CoilValue(other)),
            }
        }
        6 => {
            exact(function, pdu, 5)?;
            Ok(Request::WriteSingleRegister {
                address: field(function, pdu, 1, 5)?,
                value: field(function, pdu, 3, 5)?,
            })
        }
        15 | 16 => {
            let address = field(function, pdu, 1, 6)?;
            let quantity = field(function, pdu, 3, 6)?;
            let (max, bytes) = if function == 15 {
                (limits::WRITE_COILS, usize::from(quantity).div_ceil(8))
            } else {
                (limits::WRITE_REGISTERS, 2 * usize::from(quantity))
            };
            let s = span(function, address, quantity, max)?;
            byte_count(function, pdu, 5, bytes)?;
            Ok(if function == 15 {
                Request::WriteMultipleCoils(s)
            } else {
                Request::WriteMultipleRegisters(s)
            })
        }
        23 => {
            let read = span(
                function,
                field(function, pdu, 1, 10)?,
                field(function, pdu, 3, 10)?,
                limits::READ_REGISTERS,
            )?;
            let wq = field(function, pdu, 7, 10)?;
            let write = span(
                function,
                field(function, pdu, 5, 10)?,
                wq,
                limits::READ_WRITE_WRITE_REGISTERS,
            )?;
            byte_count(function, pdu, 9, 2 * usize::from(wq))?;
            Ok(Request::ReadWriteMultipleRegisters { read, write })
        }
        f if f >= 0x80 => Err(FrameError::ResponseCode(f)),
        f => Ok(Request::Other(f)),
    }
}

/// Modbus exception codes the gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionCode {
    /// 01: the function code is not allowed.
    IllegalFunction = 1,
    /// 02: the address range is not allowed.
    IllegalDataAddress = 2,
    /// 0A: gateway path unavailable (the unit id is not allowed).
    GatewayPathUnavailable = 0x0A,
}

/// An exception response frame to `mbap`'s request for `function`.
pub fn exception_frame(mbap: &Mbap, function: u8, code: ExceptionCode) -> [u8; 9] {
    let [t0, t1] = mbap.transaction.to_be_bytes();
    [t0, t1, 0, 0, 0, 3, mbap.unit, function | 0x80, code as u8]
}

/// Writes a request frame (for tests and tools).
pub fn encode(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let len = u16::try_from(pdu.len() + 1).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(MBAP_LEN + pdu.len());
    out.extend_from_slice(&transaction.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(unit);
    out.extend_from_slice(pdu);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_pdu(f: u8, addr: u16, qty: u16) -> Vec<u8> {
        let mut p = vec![f];
        p.extend_from_slice(&addr.to_be_bytes());
        p.extend_from_slice(&qty.to_be_bytes());
        p
    }

    fn write_multi(f: u8, addr: u16, qty: u16, bytes: usize) -> Vec<u8> {
        let mut p = read_pdu(f, addr, qty);
        p.push(u8::try_from(bytes).unwrap_or(255));
        p.resize(p.len() + bytes, 0);
        p
    }

    #[test]
    fn header_protocol_id_and_length_limits() {
        assert!(matches!(
            frame_header(&[0, 1, 0, 1]),
            Err(FrameError::ProtocolId(1))
        ));
        assert_eq!(
            frame_header(&[0, 1, 0, 0, 0, 1]),
            Err(FrameError::Length(1))
        );
        assert_eq!(
            frame_header(&[0, 1, 0, 0, 0, 255]),
            Err(FrameError::Length(255))
        );
        assert_eq!(
            frame_header(&[0, 1, 0, 0, 0xff, 0xff]),
            Err(FrameError::Length(0xffff))
        );
        let h = frame_header(&[0, 1, 0, 0, 0, 2, 9]).unwrap().unwrap();
        assert_eq!((h.transaction, h.unit, h.frame_len()), (1, 9, 8));
        let h = frame_header(&[0, 1, 0, 0, 0, 254, 9]).unwrap().unwrap();
        assert_eq!(h.frame_len(), MAX_FRAME);
        // Truncated headers wait for more.
        for n in 0..MBAP_LEN {
            assert_eq!(frame_header(&[0, 1, 0, 0, 0, 6, 1][..n]), Ok(None));
        }
    }

    #[test]
    fn truncated_frames_wait_and_whole_frames_split() {
        let f = encode(7, 1, &read_pdu(3, 0, 10));
        for n in 0..f.len() {
            assert_eq!(Frame::split(&f[..n]), Ok(None), "{n} bytes");
        }
        let frame = Frame::split(&f).unwrap().unwrap();
        assert_eq!(frame.pdu, &read_pdu(3, 0, 10)[..]);
        assert_eq!(frame.function(), 3);
    }

    #[test]
    fn read_quantity_boundaries() {
        for (f, max) in [(1, 2000), (2, 2000), (3, 125), (4, 125)] {
            assert!(parse_request(&read_pdu(f, 0, 1)).is_ok());
            assert!(parse_request(&read_pdu(f, 0, max)).is_ok());
            assert!(matches!(
                parse_request(&read_pdu(f, 0, 0)),
                Err(FrameError::Quantity { quantity: 0, .. })
            ));
            assert!(matches!(
                parse_request(&read_pdu(f, 0, max + 1)),
                Err(FrameError::Quantity { .. })
            ));
        }
    }

    #[test]
    fn address_plus_quantity_must_not_pass_65536() {
        assert!(parse_request(&read_pdu(3, 65_535, 1)).is_ok());
        assert!(parse_request(&read_pdu(3, 65_411, 125)).is_ok());
        assert!(matches!(
            parse_request(&read_pdu(3, 65_535, 2)),
            Err(FrameError::AddressOverflow { .. })
        ));
        assert!(matches!(
            parse_request(&read_pdu(1, 65_000, 2000)),
            Err(FrameError::AddressOverflow { .. })
        ));
        assert!(parse_request(&write_multi(16, 65_413, 123, 246)).is_ok());
        assert!(parse_request(&write_multi(16, 65_414, 123, 246)).is_err());
    }

    #[test]
    fn fixed_lengths_just_inside_and_outside() {
        for f in [1, 2, 3, 4, 5, 6] {
            let mut p = read_pdu(f, 0, 1);
            if f == 5 {
                p[3..5].copy_from_slice(&[0xff, 0]);
            }
            assert!(parse_request(&p).is_ok(), "fc {f}");
            let mut long = p.clone();
            long.push(0);
            assert!(
                matches!(parse_request(&long), Err(FrameError::PduLength { .. })),
                "fc {f} long"
            );
            assert!(
                matches!(parse_request(&p[..4]), Err(FrameError::PduLength { .. })),
                "fc {f} short"
            );
        }
        assert!(matches!(
            parse_request(&read_pdu(5, 0, 1)),
            Err(FrameError::CoilValue(1))
        ));
    }

    #[test]
    fn write_multiple_quantities_and_byte_counts() {
        // Coils: 1..=1968, byte count = ceil(q / 8).
        assert!(parse_request(&write_multi(15, 0, 1, 1)).is_ok());
        assert!(parse_request(&write_multi(15, 0, 8, 1)).is_ok());
        assert!(parse_request(&write_multi(15, 0, 9, 2)).is_ok());
        assert!(parse_request(&write_multi(15, 0, 1968, 246)).is_ok());
        assert!(matches!(
            parse_request(&write_multi(15, 0, 1969, 247)),
            Err(FrameError::Quantity { .. })
        ));
        assert!(matches!(
            parse_request(&write_multi(15, 0, 0, 0)),
            Err(FrameError::Quantity { .. })
        ));
        assert!(matches!(
            parse_request(&write_multi(15, 0, 9, 1)),
            Err(FrameError::ByteCount { .. })
        ));
        // Registers: 1..=123, byte count = 2q.
        assert!(parse_request(&write_multi(16, 0, 1, 2)).is_ok());
        assert!(parse_request(&write_multi(16, 0, 123, 246)).is_ok());
        assert!(matches!(
            parse_request(&write_multi(16, 0, 124, 248)),
            Err(FrameError::Quantity { .. })
        ));
        assert!(matches!(
            parse_request(&write_multi(16, 0, 2, 3)),
            Err(FrameError::ByteCount { .. })
        ));
        // Byte count right, but more (or fewer) data bytes than it says.
        let mut extra = write_multi(16, 0, 2, 4);
        extra.push(0);
        assert!(matches!(
            parse_request(&extra),
            Err(FrameError::PduLength { .. })
        ));
        let short = write_multi(16, 0, 2, 4);
        assert!(matches!(
            parse_request(&short[..short.len() - 1]),
            Err(FrameError::PduLength { .. })
        ));
    }

    #[test]
    fn read_write_multiple_registers() {
        let pdu = |rq: u16, wq: u16, bytes: usize| {
            let mut p = vec![23, 0, 0];
            p.extend_from_slice(&rq.to_be_bytes());
            p.extend_from_slice(&[0, 10]);
            p.extend_from_slice(&wq.to_be_bytes());
            p.push(u8::try_from(bytes).unwrap());
            p.resize(p.len() + bytes, 0);
            p
        };
        assert!(parse_request(&pdu(125, 121, 242)).is_ok());
        assert!(parse_request(&pdu(1, 1, 2)).is_ok());
        assert!(parse_request(&pdu(126, 1, 2)).is_err());
        assert!(parse_request(&pdu(1, 122, 244)).is_err());
        assert!(parse_request(&pdu(1, 2, 2)).is_err());
        assert!(parse_request(&pdu(1, 1, 2)[..5]).is_err());
    }

    #[test]
    fn smuggled_second_frame_in_the_length_is_refused() {
        // An FC3 whose MBAP length also covers an FC16 PDU.
        let mut pdu = read_pdu(3, 0, 1);
        pdu.extend_from_slice(&write_multi(16, 0, 1, 2));
        let f = encode(1, 1, &pdu);
        let frame = Frame::split(&f).unwrap().unwrap();
        assert!(matches!(
            parse_request(frame.pdu),
            Err(FrameError::PduLength {
                function: 3,
                expected: 5,
                ..
            })
        ));
        // Two honest frames back to back split into two.
        let mut two = encode(1, 1, &read_pdu(3, 0, 1));
        two.extend(encode(2, 1, &read_pdu(4, 0, 1)));
        let first = Frame::split(&two).unwrap().unwrap();
        let rest = &two[first.mbap.frame_len()..];
        let second = Frame::split(rest).unwrap().unwrap();
        assert_eq!((first.mbap.transaction, second.mbap.transaction), (1, 2));
    }

    #[test]
    fn other_functions_are_left_to_policy_and_response_codes_refused() {
        assert_eq!(parse_request(&[8, 0, 0, 0, 0]), Ok(Request::Other(8)));
        assert_eq!(parse_request(&[43, 14, 1, 0]), Ok(Request::Other(43)));
        assert_eq!(
            parse_request(&[0x83, 2]),
            Err(FrameError::ResponseCode(0x83))
        );
    }

    #[test]
    fn exception_frame_echoes_the_transaction() {
        let h = frame_header(&encode(0xabcd, 7, &[6, 0, 0, 0, 0]))
            .unwrap()
            .unwrap();
        assert_eq!(
            exception_frame(&h, 6, ExceptionCode::IllegalFunction),
            [0xab, 0xcd, 0, 0, 0, 3, 7, 0x86, 1]
        );
    }
}
