//! 5.1.3.1.1 and 5.1.2.1.2: what the device publishes about itself is
//! public and current: security.txt (RFC 9116) with a contact and a future
//! expiry, and a support end date in the future.

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Context, describe_failure};
use crate::client::{Reply, quote};
use crate::report::{Finding, Verdict};

/// Fetches `path` without credentials; `Err` is the finding for anything
/// but a 200 (404: not published, so not applicable).
async fn fetch(
    cx: &Context<'_>,
    path: &str,
    finding: impl Fn(Verdict, Vec<String>) -> Finding,
) -> Result<(Reply, String), Finding> {
    let sent = format!("GET {path} without credentials");
    match cx
        .http
        .send_patiently(Method::GET, path, &[], Bytes::new())
        .await
    {
        Ok(reply) if reply.status == StatusCode::OK => {
            let line = format!("{sent} → {}", reply.summary());
            Ok((reply, line))
        }
        Ok(reply) if reply.status == StatusCode::NOT_FOUND => Err(finding(
            Verdict::NotApplicable,
            vec![format!(
                "{sent} → {}: the device publishes no such document",
                reply.summary()
            )],
        )),
        Ok(reply) => Err(finding(
            if reply.status.is_server_error() {
                Verdict::Error
            } else {
                Verdict::Fail
            },
            vec![format!("{sent} → {} (must be public)", reply.summary())],
        )),
        Err(e) => Err(finding(
            Verdict::Error,
            vec![format!("{sent} → {}", describe_failure(&e))],
        )),
    }
}

/// The value of the first `name:` field of an RFC 9116 text (field names
/// are case-insensitive; comments start with `#`).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
}

/// A date as the device publishes it: RFC 3339, or a plain `YYYY-MM-DD`
/// (taken as the end of that day, UTC).
fn parse_date(text: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let mut parts = text.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    Some(date.with_hms(23, 59, 59).ok()?.assume_utc())
}

/// `GET /.well-known/security.txt` is public, names a contact and expires
/// in the future.
pub(crate) async fn security_txt(cx: &Context<'_>) -> Finding {
    let finding = |verdict, evidence| {
        Finding::new(
            "5.1.3.1.1",
            &["5.1.3.1.2"],
            "security-txt",
            "security.txt is public, names a contact and has not expired",
            verdict,
            evidence,
        )
    };
    let (reply, line) = match fetch(cx, "/.well-known/security.txt", finding).await {
        Ok(ok) => ok,
        Err(finding) => return finding,
    };
    let text = String::from_utf8_lossy(&reply.body);
    let mut evidence = vec![line];
    let mut ok = true;
    match field(&text, "Contact") {
        Some(contact) if !contact.is_empty() => {
            evidence.push(format!("Contact: {}", quote(contact)));
        }
        _ => {
            ok = false;
            evidence.push("NO Contact: field".into());
        }
    }
    match field(&text, "Expires") {
        Some(value) => match OffsetDateTime::parse(value, &Rfc3339) {
            Ok(expires) if expires > cx.now => {
                evidence.push(format!("Expires: {} (in the future)", quote(value)));
            }
            Ok(_) => {
                ok = false;
                evidence.push(format!("Expires: {} (EXPIRED)", quote(value)));
            }
            Err(_) => {
                ok = false;
                evidence.push(format!("Expires: {} (not an RFC 3339 date)", quote(value)));
            }
        },
        None => {
            ok = false;
            evidence.push("NO Expires: field".into());
        }
    }
    finding(if ok { Verdict::Pass } else { Verdict::Fail }, evidence)
}

/// `GET /api/v1/disclosure` is public and its `security_updates_until`
/// lies in the future.
pub(crate) async fn disclosure_summary(cx: &Context<'_>) -> Finding {
    let finding = |verdict, evidence| {
        Finding::new(
            "5.1.2.1.2",
            &["5.1.2.1.3"],
            "disclosure-summary",
            "The disclosure summary is public and security updates have not ended",
            verdict,
            evidence,
        )
    };
    let (reply, line) = match fetch(cx, "/api/v1/disclosure", finding).await {
        Ok(ok) => ok,
        Err(finding) => return finding,
    };
    let mut evidence = vec![line];
    let until = reply.json().and_then(|body| {
        body.get("security_updates_until")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    });
    let verdict = match until {
        None => {
            evidence.push("NO security_updates_until string in the JSON body".into());
            Verdict::Fail
        }
        Some(value) => match parse_date(&value) {
            Some(date) if date > cx.now => {
                evidence.push(format!(
                    "security_updates_until: {} (in the future)",
                    quote(&value)
                ));
                Verdict::Pass
            }
            Some(_) => {
                evidence.push(format!(
                    "security_updates_until: {} (SUPPORT HAS ENDED)",
                    quote(&value)
                ));
                Verdict::Fail
            }
            None => {
                evidence.push(format!(
                    "security_updates_until: {} (not a date)",
                    quote(&value)
                ));
                Verdict::Fail
            }
        },
    };
    finding(verdict, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_case_insensitively_and_comments_skipped() {
        let text = "# Contact: nobody\ncontact: mailto:a@b.test\nEXPIRES: 2030-01-01T00:00:00Z\n";
        assert_eq!(field(text, "Contact"), Some("mailto:a@b.test"));
        assert_eq!(field(text, "Expires"), Some("2030-01-01T00:00:00Z"));
        assert_eq!(field(text, "Policy"), None);
    }

    #[test]
    fn dates_parse_as_rfc3339_or_plain_days() {
        assert!(parse_date("2031-03-31").is_some());
        assert!(parse_date("2031-03-31T00:00:00Z").is_some());
        assert!(parse_date("2031-13-01").is_none());
        assert!(parse_date("soon").is_none());
    }
}
