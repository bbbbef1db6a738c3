#![allow(clippy::unwrap_used, unreachable_pub)]

use std::collections::BTreeSet;

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::{self, Client, Device, OWNER_PASSWORD, VIEWER_PASSWORD, assert_error_body};

/// Permissions a viewer holds (access::role_allows).
const VIEWER_PERMISSIONS: [&str; 2] = ["read-status", "read-config"];

/// One operation of the API document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Operation {
    method: String,
    path: String,
    /// None for a public operation (`security: [{}]`).
    permission: Option<String>,
}

impl Operation {
    /// The path with its parameters replaced by valid-looking values.
    fn concrete(&self) -> String {
        let value = if self.path.starts_with("/api/v1/interfaces/") {
            "management-api"
        } else {
            "owner"
        };
        let mut out = String::new();
        let mut rest = self.path.as_str();
        while let Some((before, after)) = rest.split_once('{') {
            out.push_str(before);
            out.push_str(value);
            rest = after.split_once('}').unwrap().1;
        }
        out.push_str(rest);
        out
    }

    fn method(&self) -> Method {
        self.method.parse().unwrap()
    }

    fn is_stream(&self) -> bool {
        self.path.ends_with("/stream")
    }

    fn is_logout(&self) -> bool {
        self.method == "DELETE" && self.path == "/api/v1/session"
    }
}

fn operations(doc: &Value) -> BTreeSet<Operation> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            if method.parse::<Method>().is_err() || method == "PARAMETERS" {
                continue;
            }
            let security = operation["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} declares no security"));
            let public = security
                .iter()
                .any(|s| s.as_object().is_some_and(|o| o.is_empty()));
            let scopes: BTreeSet<String> = security
                .iter()
                .flat_map(|s| s.as_object().unwrap().values())
                .flat_map(|scopes| scopes.as_array().unwrap())
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            assert!(
                public || scopes.len() == 1,
                "{method} {path}: one permission per route, got {scopes:?}"
            );
            out.insert(Operation {
                method,
                path: path.clone(),
                permission: if public {
                    None
                } else {
                    scopes.into_iter().next()
                },
            });
        }
    }
    out
}

/// Every operation in the document: 401 without credentials unless it is
/// one of the three public ones; 403 for a viewer when it needs a
/// permission a viewer lacks; neither for a viewer or the owner when the
/// role allows it. The enforced route table is the document's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_refuses_strangers_and_roles_without_its_permission() {
    let device = Device::provision();
    let mut file = device.file();
    // Dozens of requests in a burst: the per-client limit is not under test.
    file.api.per_client_rps = 10_000;
    file.api.per_client_burst = 10_000;
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let root = device.root();

    let mut anonymous = Client::connect(addr, &root).await;
    let doc = anonymous
        .call(Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    let ops = operations(&doc.body);
    assert!(ops.len() >= 15, "only {} operations documented", ops.len());

    let public: BTreeSet<(String, String)> = ops
        .iter()
        .filter(|o| o.permission.is_none())
        .map(|o| (o.method.clone(), o.path.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/api/v1/setup/claim"),
        ("POST", "/api/v1/session"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/.well-known/security.txt"),
        ("GET", "/api/v1/disclosure"),
        ("GET", "/api/v1/disclosure/{document}"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(public, expected, "the public operations");

    // The guard enforces exactly the document.
    let enforced: BTreeSet<Operation> = agent
        .routes()
        .routes()
        .map(|(method, path, requirement)| Operation {
            method: method.to_string(),
            path: path.to_owned(),
            permission: match requirement {
                agent::Requirement::Public => None,
                agent::Requirement::Permission(p) => Some(agent::guard::permission_name(p)),
            },
        })
        .collect();
    assert_eq!(enforced, ops, "route table vs API document");

    let mut owner = support::claimed(addr, &device).await;
    support::create_viewer(&mut owner).await;
    let mut viewer = support::session(addr, &root, "viewer", VIEWER_PASSWORD).await;

    let mut checked_denials = 0;
    for op in &ops {
        let path = op.concrete();
        let what = format!("{} {path}", op.method);

        // (a) No credentials.
        let reply = anonymous.call(op.method(), &path, None).await;
        match &op.permission {
            None => assert!(
                reply.status != StatusCode::UNAUTHORIZED && reply.status != StatusCode::FORBIDDEN,
                "{what} is public but answered {}",
                reply.status
            ),
            Some(_) => {
                assert_eq!(
                    reply.status,
                    StatusCode::UNAUTHORIZED,
                    "{what} without credentials"
                );
                assert_error_body(&reply);
            }
        }

        let Some(permission) = &op.permission else {
            continue;
        };
        if op.is_logout() {
            // Checked last: it would end the session.
            continue;
        }
        // (b) A role without the permission, and roles with it.
        if VIEWER_PERMISSIONS.contains(&permission.as_str()) {
            for (who, password) in [("viewer", VIEWER_PASSWORD), ("owner", OWNER_PASSWORD)] {
                let status = if op.is_stream() {
                    // An endless body: on a connection of its own.
                    let mut c = support::session(addr, &root, who, password).await;
                    c.open(&path).await.status()
                } else if who == "viewer" {
                    viewer.call(op.method(), &path, None).await.status
                } else {
                    owner.call(op.method(), &path, None).await.status
                };
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what} needs {permission}, which a {who} has, but answered {status}"
                );
            }
        } else {
            let reply = viewer.call(op.method(), &path, None).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{what} needs {permission}; a viewer got {:?}",
                reply.body
            );
            assert_eq!(reply.body["error"], "forbidden");
            checked_denials += 1;
            // The owner passes the guard (the empty body is then refused
            // by the handler, so nothing changes).
            let reply = owner.call(op.method(), &path, None).await;
            assert!(
                reply.status != StatusCode::UNAUTHORIZED && reply.status != StatusCode::FORBIDDEN,
                "{what}: the owner got {} {:?}",
                reply.status,
                reply.body
            );
        }
    }
    assert!(
        checked_denials >= 8,
        "only {checked_denials} routes deny viewers"
    );

    // Nothing above changed anything: still two accounts, version 1.
    let accounts = owner.call(Method::GET, "/api/v1/accounts", None).await;
    assert_eq!(
        accounts.body.as_array().unwrap().len(),
        2,
        "{:?}",
        accounts.body
    );
    let config = owner.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(config.body["version"], 1);

    // Logout, last: a viewer may end its own session.
    let logout = viewer.call(Method::DELETE, "/api/v1/session", None).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    agent.shutdown().await;
}

/// Unknown paths answer 404, not 401: the guard does not reveal that
/// authentication exists where no route does.
#[tokio::test]
async fn unknown_paths_are_not_found_even_without_credentials() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut client = Client::connect(addr, &device.root()).await;
    for (method, path) in [
        (Method::GET, "/api/v1/nope"),
        (Method::GET, "/admin"),
        (Method::POST, "/api/v1/status/extra"),
        (Method::GET, "/api/v2/status"),
        (Method::DELETE, "/"),
    ] {
        let reply = client.call(method.clone(), path, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_error_body(&reply);
    }
    agent.shutdown().await;
}
