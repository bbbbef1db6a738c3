//! 5.2.6.1.1 / 5.2.6.1.2: every operation the device documents as needing
//! credentials refuses a request without them.

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::{Context, describe_failure};
use crate::report::{Finding, Verdict};

/// Where the device serves its API document.
const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// What replaces `{param}` in a path: a value no device has (so a probe
/// that got through would find nothing to act on) made of characters any
/// path parameter accepts.
const PROBE_PARAM: &str = "assess-probe";

/// The methods probed; others (HEAD, OPTIONS, TRACE) are not documented
/// by the device.
const METHODS: [(&str, Method); 5] = [
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("patch", Method::PATCH),
];

/// An operation of the document and whether it is public.
#[derive(Debug)]
struct Operation {
    method: Method,
    path: String,
    public: bool,
}

/// Public means an empty requirement (`{}`) among its alternatives, at
/// the operation or, without one there, at the document level. No
/// declaration at all is not public.
fn is_public(operation: &Value, document: &Value) -> bool {
    let security = operation
        .get("security")
        .or_else(|| document.get("security"));
    security
        .and_then(Value::as_array)
        .is_some_and(|alternatives| {
            alternatives
                .iter()
                .any(|a| a.as_object().is_some_and(serde_json::Map::is_empty))
        })
}

fn operations(document: &Value) -> Result<Vec<Operation>, String> {
    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .ok_or("the document has no `paths` object")?;
    let mut out = Vec::new();
    for (path, item) in paths {
        if !path.starts_with('/') {
            return Err(format!(
                "path {:?} does not start with '/'",
                crate::client::quote(path)
            ));
        }
        for (name, method) in &METHODS {
            if let Some(operation) = item.get(*name) {
                out.push(Operation {
                    method: method.clone(),
                    path: path.clone(),
                    public: is_public(operation, document),
                });
            }
        }
    }
    Ok(out)
}

/// `/api/v1/accounts/{name}` → `/api/v1/accounts/assess-probe`.
fn concrete(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push_str(PROBE_PARAM);
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The probe: fetch the document, then send each protected operation once,
/// with no credentials and no body (nothing a device that wrongly let it
/// through could act on).
pub(crate) async fn guarded_routes(cx: &Context<'_>) -> Finding {
    let finding = |verdict, evidence| {
        Finding::new(
            "5.2.6.1.1",
            &["5.2.6.1.2"],
            "guarded-routes",
            "Every documented operation that needs credentials refuses a request without them",
            verdict,
            evidence,
        )
    };
    let fetched = format!("GET {OPENAPI_PATH} without credentials");
    let document = match cx
        .http
        .send_patiently(Method::GET, OPENAPI_PATH, &[], Bytes::new())
        .await
    {
        Ok(reply) if reply.status == StatusCode::OK => match reply.json() {
            Some(document) => document,
            None => {
                return finding(
                    Verdict::Error,
                    vec![format!("{fetched} → {}: not JSON", reply.summary())],
                );
            }
        },
        Ok(reply) => {
            return finding(
                Verdict::Error,
                vec![format!(
                    "{fetched} → {}: no API document to take the routes from",
                    reply.summary()
                )],
            );
        }
        Err(e) => {
            return finding(
                Verdict::Error,
                vec![format!("{fetched} → {}", describe_failure(&e))],
            );
        }
    };
    let operations = match operations(&document) {
        Ok(ops) => ops,
        Err(reason) => {
            return finding(
                Verdict::Error,
                vec![format!("{fetched} → 200, but {reason}")],
            );
        }
    };
    let public: Vec<String> = operations
        .iter()
        .filter(|o| o.public)
        .map(|o| format!("{} {}", o.method, crate::client::quote(&o.path)))
        .collect();
    let protected: Vec<&Operation> = operations.iter().filter(|o| !o.public).collect();
    let mut evidence = vec![
        format!(
            "{fetched} → 200: {} operations, {} public, {} protected",
            operations.len(),
            public.len(),
            protected.len()
        ),
        format!("public (empty security requirement): {}", public.join(", ")),
    ];
    let (mut failed, mut errors) = (0usize, 0usize);
    for op in &protected {
        let path = concrete(&op.path);
        let sent = format!(
            "{} {} without credentials",
            op.method,
            crate::client::quote(&path)
        );
        match cx
            .http
            .send_patiently(op.method.clone(), &path, &[], Bytes::new())
            .await
        {
            Ok(reply)
                if reply.status == StatusCode::UNAUTHORIZED
                    || reply.status == StatusCode::FORBIDDEN =>
            {
                evidence.push(format!("{sent} → {}", reply.summary()));
            }
            Ok(reply) => {
                failed += 1;
                evidence.push(format!(
                    "{sent} → {} (NOT REFUSED for lack of credentials)",
                    reply.summary()
                ));
            }
            Err(e) => {
                errors += 1;
                evidence.push(format!("{sent} → {}", describe_failure(&e)));
            }
        }
    }
    let verdict = if failed > 0 {
        Verdict::Fail
    } else if errors > 0 {
        Verdict::Error
    } else if protected.is_empty() {
        evidence.push("the document declares no protected operation".into());
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    finding(verdict, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_become_the_probe_value() {
        assert_eq!(
            concrete("/api/v1/accounts/{name}/password"),
            "/api/v1/accounts/assess-probe/password"
        );
        assert_eq!(concrete("/a/{x}/{y}"), "/a/assess-probe/assess-probe");
        assert_eq!(concrete("/a/{broken"), "/a/{broken");
    }

    #[test]
    fn only_an_empty_requirement_is_public() {
        let doc = serde_json::json!({"paths": {
            "/open": {"get": {"security": [{}]}},
            "/either": {"get": {"security": [{"session": ["x"]}, {}]}},
            "/closed": {"get": {"security": [{"session": ["x"]}]}},
            "/undeclared": {"post": {}},
        }});
        let ops = operations(&doc).unwrap();
        let public = |p: &str| ops.iter().find(|o| o.path == p).unwrap().public;
        assert!(public("/open") && public("/either"));
        assert!(!public("/closed") && !public("/undeclared"));
    }
}
