//! The policy layer over Modbus frames: which requests a device may send,
//! and which server responses may reach it. No sockets.
//!
//! Requests are checked in this order: well-formed (else the connection
//! closes, whatever the policy says: a peer that breaks framing cannot be
//! answered safely), unit id allowed (else exception 0A, gateway path
//! unavailable), function allowed (else 01, illegal function), every
//! address span inside one allowed range of that function (else 02,
//! illegal data address). A policy refusal is answered or dropped per
//! the device's `refusal`.
//!
//! Responses must match an outstanding request by transaction id, unit id
//! and function code (or its exception code), with the PDU length the
//! request implies; anything else closes the connection, so a server (or
//! someone spoofing one) cannot answer a question that was not asked.

use std::collections::HashMap;

use super::codec::{self, ExceptionCode, Frame, FrameError, Request};
use crate::mqtt::inspect::{Violation, ViolationKind};
use crate::policy::modbus::ModbusDevice;

/// Most requests in flight on one connection (Modbus TCP allows
/// pipelining; servers commonly take 1–16).
pub const MAX_OUTSTANDING: usize = 64;

/// Why a request is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a well-formed request: the connection closes.
    Malformed(FrameError),
    /// Well-formed but not allowed: answered with `code` or dropped, per
    /// policy.
    Denied {
        /// The exception the device gets under `refusal = "exception"`.
        code: ExceptionCode,
        /// What was refused, for the operator.
        detail: String,
    },
}

impl Refused {
    /// As a violation, for events.
    pub fn violation(&self) -> Violation {
        match self {
            Self::Malformed(e) => Violation::new(ViolationKind::Malformed, e.to_string()),
            Self::Denied { detail, .. } => Violation::new(ViolationKind::NotAuthorized, detail),
        }
    }
}

/// Parses `frame`'s request and checks it against `device`'s rules.
pub fn check_request(device: &ModbusDevice, frame: &Frame<'_>) -> Result<Request, Refused> {
    let request = codec::parse_request(frame.pdu).map_err(Refused::Malformed)?;
    let unit = frame.mbap.unit;
    if !device.unit_ids.contains(&unit) {
        return Err(Refused::Denied {
            code: ExceptionCode::GatewayPathUnavailable,
            detail: format!("unit id {unit} not allowed"),
        });
    }
    let function = request.function();
    if !device.functions.contains(&function) {
        return Err(Refused::Denied {
            code: ExceptionCode::IllegalFunction,
            detail: format!("function {function} not allowed"),
        });
    }
    for span in request.spans() {
        if !device.allows_range(function, span.start, span.last()) {
            return Err(Refused::Denied {
                code: ExceptionCode::IllegalDataAddress,
                detail: format!(
                    "function {function}: addresses {}..={} not inside one allowed range",
                    span.start,
                    span.last()
                ),
            });
        }
    }
    Ok(request)
}

#[derive(Debug, Clone, Copy)]
struct Expected {
    unit: u8,
    request: Request,
}

/// The requests forwarded on one connection and not yet answered.
#[derive(Debug, Default)]
pub struct ResponseMatcher {
    outstanding: HashMap<u16, Expected>,
}

impl ResponseMatcher {
    /// Records a forwarded request. Refused (the connection closes) when
    /// its transaction id is already outstanding, since its response
    /// could not be told apart, or when too many are in flight.
    pub fn expect(
        &mut self,
        transaction: u16,
        unit: u8,
        request: Request,
    ) -> Result<(), Violation> {
        if self.outstanding.len() >= MAX_OUTSTANDING {
            return Err(Violation::new(
                ViolationKind::Protocol,
                format!("more than {MAX_OUTSTANDING} requests in flight"),
            ));
        }
        if self.outstanding.contains_key(&transaction) {
            return Err(Violation::new(
                ViolationKind::Protocol,
                format!("transaction id {transaction} reused while outstanding"),
            ));
        }
        self.outstanding
            .insert(transaction, Expected { unit, request });
        Ok(())
    }

    /// Requests in flight.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Checks one server response frame against the outstanding requests
    /// and retires its request.
    pub fn check_response(&mut self, frame: &Frame<'_>) -> Result<(), Violation> {
        let t = frame.mbap.transaction;
        let Some(expected) = self.outstanding.remove(&t) else {
            return Err(Violation::new(
                ViolationKind::Protocol,
                format!("response to transaction {t}, which is not outstanding"),
            ));
        };
        let function = expected.request.function();
        let mismatch = |what: String| Err(Violation::new(ViolationKind::Protocol, what));
        if frame.mbap.unit != expected.unit {
            return mismatch(format!(
                "transaction {t}: response from unit {}, request to unit {}",
                frame.mbap.unit, expected.unit
            ));
        }
        let got = frame.function();
        if got == function | 0x80 {
            return if frame.pdu.len() == 2 {
                Ok(())
            } else {
                mismatch(format!(
                    "transaction {t}: exception PDU of {} bytes",
                    frame.pdu.len()
                ))
            };
        }
        if got != function {
            return mismatch(format!(
                "transaction {t}: response function {got}, request function {function}"
            ));
        }
        if let Some(len) = expected.request.response_pdu_len() {
            let reads = !matches!(
                expected.request,
                Request::WriteSingleCoil { .. }
                    | Request::WriteSingleRegister { .. }
                    | Request::WriteMultipleCoils(_)
                    | Request::WriteMultipleRegisters(_)
            );
            let count_ok = !reads || frame.pdu.get(1).map(|&c| usize::from(c) + 2) == Some(len);
            if frame.pdu.len() != len || !count_ok {
                return mismatch(format!(
                    "transaction {t}: response PDU of {} bytes, expected {len}",
                    frame.pdu.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use crate::modbus::codec::encode;

    fn device() -> ModbusDevice {
        let p = Policy::from_toml(
            r#"
            [[modbus.devices]]
            name = "d"
            source = "127.0.0.1"
            unit_ids = [1]
            functions = [1, 3, 16]
            ranges = { 3 = [[0, 9], [10, 19]], 16 = [[100, 109]] }
            "#,
            "t",
        )
        .unwrap();
        p.modbus.devices()[0].clone()
    }

    fn check(unit: u8, pdu: &[u8]) -> Result<Request, Refused> {
        let bytes = encode(1, unit, pdu);
        let frame = Frame::split(&bytes).unwrap().unwrap();
        check_request(&device(), &frame)
    }

    fn code(r: Result<Request, Refused>) -> Option<ExceptionCode> {
        match r {
            Err(Refused::Denied { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn requests_are_checked_against_the_device() {
        assert!(check(1, &[3, 0, 0, 0, 10]).is_ok());
        assert!(check(1, &[3, 0, 10, 0, 10]).is_ok());
        // Straddles the boundary between two allowed ranges.
        assert_eq!(
            code(check(1, &[3, 0, 9, 0, 2])),
            Some(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            code(check(1, &[3, 0, 19, 0, 2])),
            Some(ExceptionCode::IllegalDataAddress)
        );
        // Allowed function without ranges: no address.
        assert_eq!(
            code(check(1, &[1, 0, 0, 0, 1])),
            Some(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            code(check(1, &[6, 0, 0, 0, 1])),
            Some(ExceptionCode::IllegalFunction)
        );
        for f in [8u8, 43, 90, 0, 127] {
            assert_eq!(
                code(check(1, &[f, 0, 0, 0, 0])),
                Some(ExceptionCode::IllegalFunction),
                "fc {f}"
            );
        }
        assert_eq!(
            code(check(2, &[3, 0, 0, 0, 1])),
            Some(ExceptionCode::GatewayPathUnavailable)
        );
        assert!(check(1, &[16, 0, 100, 0, 1, 2, 0, 7]).is_ok());
        assert_eq!(
            code(check(1, &[16, 0, 109, 0, 2, 4, 0, 7, 0, 8])),
            Some(ExceptionCode::IllegalDataAddress)
        );
        assert!(matches!(
            check(1, &[3, 0, 0, 0, 0]),
            Err(Refused::Malformed(_))
        ));
    }

    fn response(t: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
        encode(t, unit, pdu)
    }

    fn matched(m: &mut ResponseMatcher, bytes: &[u8]) -> Result<(), Violation> {
        m.check_response(&Frame::split(bytes).unwrap().unwrap())
    }

    #[test]
    fn responses_must_match_an_outstanding_request() {
        let read = Request::ReadHoldingRegisters(codec::Span {
            start: 0,
            quantity: 2,
        });
        let mut m = ResponseMatcher::default();
        m.expect(5, 1, read).unwrap();
        // Spoofed: wrong transaction id, then right id but wrong unit,
        // wrong function, wrong length.
        assert!(matched(&mut m, &response(6, 1, &[3, 4, 0, 1, 0, 2])).is_err());
        assert_eq!(m.outstanding(), 1);
        assert!(matched(&mut m, &response(5, 2, &[3, 4, 0, 1, 0, 2])).is_err());
        for bad in [
            &[4u8, 4, 0, 1, 0, 2][..],
            &[3, 2, 0, 1],
            &[3, 4, 0, 1, 0, 2, 0],
            &[0x83, 2, 0],
        ] {
            let mut m = ResponseMatcher::default();
            m.expect(5, 1, read).unwrap();
            assert!(matched(&mut m, &response(5, 1, bad)).is_err(), "{bad:?}");
        }
        // The right one, once.
        let mut m = ResponseMatcher::default();
        m.expect(5, 1, read).unwrap();
        matched(&mut m, &response(5, 1, &[3, 4, 0, 1, 0, 2])).unwrap();
        assert!(matched(&mut m, &response(5, 1, &[3, 4, 0, 1, 0, 2])).is_err());
        // An exception answers too.
        m.expect(9, 1, read).unwrap();
        matched(&mut m, &response(9, 1, &[0x83, 2])).unwrap();
    }

    #[test]
    fn transaction_ids_in_flight_are_unique_and_bounded() {
        let read = Request::ReadCoils(codec::Span {
            start: 0,
            quantity: 1,
        });
        let mut m = ResponseMatcher::default();
        m.expect(1, 1, read).unwrap();
        assert!(m.expect(1, 1, read).is_err());
        for t in 2..=u16::try_from(MAX_OUTSTANDING).unwrap() {
            m.expect(t, 1, read).unwrap();
        }
        assert!(m.expect(1000, 1, read).is_err());
    }
}
