//! OSCAL 1.2 JSON: the requirement catalog, a profile selecting it, the
//! system security plan (the SoA as `implemented-requirements`) and the
//! plan of action and milestones (the risk treatment plan).

use serde_json::{Value, json};
use time::Date;
use uuid::Uuid;

use crate::catalog::{self, Level, REQUIREMENTS, Requirement};
use crate::check::{Product, SoaStatus, Treatment, fmt_date};

/// The OSCAL version of the schemas the outputs are validated against.
pub(crate) const OSCAL_VERSION: &str = "1.2.3";
/// Namespace of Bulwark's own OSCAL properties.
pub(crate) const NS: &str = "https://example.invalid/bulwark/ns/oscal";

/// Name-based UUID: the same inputs give the same id on every build.
pub(crate) fn uuid_for(scope: &str, name: &str) -> String {
    let ns = Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        b"https://example.invalid/bulwark/comply",
    );
    Uuid::new_v5(&ns, format!("{scope}\n{name}").as_bytes()).to_string()
}

pub(crate) fn timestamp(date: Date) -> String {
    format!("{}T00:00:00Z", fmt_date(date))
}

pub(crate) fn control_id(clause: &str) -> String {
    format!("iso27402-{clause}")
}

fn group_id(clause: &str) -> String {
    format!("s{clause}")
}

fn metadata(title: &str, date: Date, version: &str, extra: Value) -> Value {
    let mut m = json!({
        "title": title,
        "last-modified": timestamp(date),
        "version": version,
        "oscal-version": OSCAL_VERSION,
    });
    if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
        m.extend(extra);
    }
    m
}

fn requirement_control(r: &Requirement) -> Value {
    let mut props = vec![
        json!({"name": "label", "value": r.clause}),
        json!({"name": "level", "ns": NS, "value": r.level.as_str()}),
    ];
    for x in r.crosswalk {
        props.push(json!({
            "name": x.document,
            "ns": NS,
            "value": x.provision,
            "class": x.relationship.as_str(),
        }));
    }
    let mut links = Vec::new();
    for cov in catalog::bulwark_coverage()
        .into_iter()
        .filter(|c| c.clause == r.clause)
    {
        props.push(json!({"name": "bulwark-status", "ns": NS, "value": cov.status}));
        for path in cov.code {
            links.push(json!({"href": path, "rel": "implemented-by"}));
        }
    }
    let mut control = json!({
        "id": control_id(r.clause),
        "class": r.level.as_str().to_ascii_lowercase(),
        "title": format!("{} {}", r.clause, r.topic),
        "props": props,
        "parts": [{
            "id": format!("{}_smt", control_id(r.clause)),
            "name": "statement",
            "prose": r.text,
        }],
    });
    if !links.is_empty()
        && let Some(c) = control.as_object_mut()
    {
        c.insert("links".into(), Value::Array(links));
    }
    control
}

const TOPICS: &[(&str, &str)] = &[
    ("5.1", "Policies and documentation"),
    ("5.1.1", "Risk management"),
    ("5.1.2", "Information disclosure"),
    ("5.1.3", "Vulnerability disclosure and handling"),
    ("5.2", "Device capabilities and operations"),
    ("5.2.2", "Configuration"),
    ("5.2.3", "Software reset"),
    ("5.2.4", "User data removal"),
    ("5.2.5", "Protection of data"),
    ("5.2.6", "Interface access"),
    ("5.2.7", "Software and firmware updates"),
    ("5.2.8", "User notifications"),
];

/// The subclause a requirement sits in (`5.2.6.1.4` → `5.2.6`).
fn subclause(clause: &str) -> String {
    clause.split('.').take(3).collect::<Vec<_>>().join(".")
}

/// The OSCAL catalog of clause 5.
pub(crate) fn catalog(date: Date, version: &str) -> Value {
    let mut groups = Vec::new();
    for (top, top_title) in TOPICS.iter().filter(|(id, _)| id.len() == 3) {
        let mut sub = Vec::new();
        for (id, title) in TOPICS
            .iter()
            .filter(|(id, _)| id.len() > 3 && id.starts_with(&format!("{top}.")))
        {
            let controls: Vec<Value> = REQUIREMENTS
                .iter()
                .filter(|r| subclause(r.clause) == *id)
                .map(requirement_control)
                .collect();
            if !controls.is_empty() {
                sub.push(json!({"id": group_id(id), "title": title, "controls": controls}));
            }
        }
        groups.push(json!({"id": group_id(top), "title": top_title, "groups": sub}));
    }
    json!({"catalog": {
        "uuid": uuid_for("catalog", version),
        "metadata": metadata(
            "ISO/IEC 27402:2023 clause 5 requirements (Bulwark paraphrase)",
            date,
            version,
            json!({"remarks": "Each requirement is the Bulwark project's own paraphrase, not the text of the standard; consult ISO/IEC 27402:2023 for the normative wording. Crosswalk properties relate each requirement to ETSI EN 303 645 provisions and NIST IR 8259A capabilities: equivalent, subset (ours asks for less) or intersects."}),
        ),
        "groups": groups,
    }})
}

/// A profile importing the whole catalog (the SSP must import a profile).
pub(crate) fn profile(p: &Product) -> Value {
    let scope = &p.info.id;
    json!({"profile": {
        "uuid": uuid_for(scope, "profile"),
        "metadata": metadata(
            &format!("ISO/IEC 27402 baseline for {}", p.info.name),
            p.info.version_date,
            &p.info.version,
            json!({}),
        ),
        "imports": [{"href": "catalog.json", "include-all": {}}],
        "merge": {"as-is": true},
    }})
}

fn parties(p: &Product) -> Value {
    let scope = &p.info.id;
    json!({
        "roles": [
            {"id": "maker", "title": "Manufacturer"},
            {"id": "risk-owner", "title": "Risk owner"},
        ],
        "parties": [
            {"uuid": uuid_for(scope, "party:maker"), "type": "organization", "name": p.info.maker},
            {"uuid": uuid_for(scope, "party:risk-owner"), "type": "person", "name": p.risk_owner.name,
             "props": [{"name": "job-title", "value": p.risk_owner.role}]},
        ],
        "responsible-parties": [
            {"role-id": "maker", "party-uuids": [uuid_for(scope, "party:maker")]},
            {"role-id": "risk-owner", "party-uuids": [uuid_for(scope, "party:risk-owner")]},
        ],
    })
}

/// The system security plan: the SoA, one `implemented-requirement` per
/// clause with the decision as the component's implementation status.
pub(crate) fn ssp(p: &Product) -> Value {
    let scope = &p.info.id;
    let this = uuid_for(scope, "component:this-system");
    let mut reqs = Vec::new();
    for r in REQUIREMENTS
        .iter()
        .filter(|r| r.level != Level::Informative)
    {
        let (state, decision, description) = if r.is_baseline() {
            match p.soa_entry(r.clause) {
                Some(e) => {
                    let features: Vec<&str> = e
                        .features
                        .iter()
                        .filter_map(|f| p.feature(f).map(|f| f.name.as_str()))
                        .collect();
                    let mut d = e.justification.clone();
                    if !features.is_empty() {
                        d = format!("{d} Features: {}.", features.join("; "));
                    }
                    let state = match e.status {
                        SoaStatus::Included => "implemented",
                        SoaStatus::Partial => "partial",
                        SoaStatus::Excluded => "not-applicable",
                    };
                    (state, e.status.as_str(), d)
                }
                // Only SHOULDs can be absent: the check refuses a missing SHALL.
                None => (
                    "planned",
                    "not-stated",
                    "Recommendation not addressed in the Statement of Applicability.".to_owned(),
                ),
            }
        } else if r.level == Level::Shall {
            (
                "implemented",
                "included",
                "Met by the maker's documentation set generated from the checked product file (risk assessment, SoA, treatment plan, user security documentation, support and disclosure policies).".to_owned(),
            )
        } else {
            continue;
        };
        let mut props = vec![json!({"name": "soa-decision", "ns": NS, "value": decision})];
        if let Some(e) = p.soa_entry(r.clause) {
            for risk in &e.risks {
                props.push(json!({"name": "linked-risk", "ns": NS, "value": risk}));
            }
        }
        reqs.push(json!({
            "uuid": uuid_for(scope, &format!("req:{}", r.clause)),
            "control-id": control_id(r.clause),
            "props": props,
            "by-components": [{
                "component-uuid": this,
                "uuid": uuid_for(scope, &format!("by:{}", r.clause)),
                "description": if description.trim().is_empty() { "See the Statement of Applicability.".to_owned() } else { description },
                "implementation-status": {"state": state},
            }],
        }));
    }
    let information_types: Vec<Value> = if p.assets.is_empty() {
        vec![json!({
            "uuid": uuid_for(scope, "info:device"),
            "title": "Device data",
            "description": "Data the device processes.",
        })]
    } else {
        p.assets
            .iter()
            .map(|a| {
                json!({
                    "uuid": uuid_for(scope, &format!("asset:{}", a.id)),
                    "title": a.name,
                    "description": if a.description.is_empty() { a.name.clone() } else { a.description.clone() },
                })
            })
            .collect()
    };
    let mut components = vec![json!({
        "uuid": this,
        "type": "this-system",
        "title": p.info.name,
        "description": p.use_case.intended_use,
        "status": {"state": "operational"},
    })];
    for f in &p.features {
        components.push(json!({
            "uuid": uuid_for(scope, &format!("feature:{}", f.id)),
            "type": "software",
            "title": f.name,
            "description": f.description,
            "status": {"state": "operational"},
        }));
    }
    let boundary = if p.system.boundary.is_empty() {
        p.system.context.clone()
    } else {
        p.system.boundary.clone()
    };
    json!({"system-security-plan": {
        "uuid": uuid_for(scope, "ssp"),
        "metadata": metadata(
            &format!("System security plan and Statement of Applicability: {}", p.info.name),
            p.info.version_date,
            &p.info.version,
            parties(p),
        ),
        "import-profile": {"href": "profile.json"},
        "system-characteristics": {
            "system-ids": [{"identifier-type": format!("{NS}/product-id"), "id": p.info.id}],
            "system-name": p.info.name,
            "description": format!("{} (model {}). {}", p.info.name, p.info.model, p.use_case.intended_use),
            "props": [
                {"name": "capability-class", "ns": NS, "value": p.info.capability_class.to_string()},
                {"name": "device-kind", "ns": NS, "value": p.info.kind},
                {"name": "security-updates-until", "ns": NS, "value": fmt_date(p.support.security_updates_until)},
            ],
            "system-information": {"information-types": information_types},
            "status": {"state": "operational"},
            "authorization-boundary": {"description": boundary},
        },
        "system-implementation": {
            "users": [{
                "uuid": uuid_for(scope, "user:owner"),
                "title": "Device owner",
                "description": if p.use_case.users.is_empty() { "The person who installs and uses the device.".to_owned() } else { p.use_case.users.clone() },
            }],
            "components": components,
        },
        "control-implementation": {
            "description": "Statement of Applicability per ISO/IEC 27402 clause 5.1.1.1.5(f): implementation status implemented = included, partial = partly included, not-applicable = excluded with the justification given.",
            "implemented-requirements": reqs,
        },
    }})
}

/// The plan of action and milestones: one risk per assessed risk, with
/// each control as a remediation and its due date as a milestone.
pub(crate) fn poam(p: &Product) -> Value {
    let scope = &p.info.id;
    let mut risks = Vec::new();
    let mut items = Vec::new();
    for r in &p.risks {
        let risk_uuid = uuid_for(scope, &format!("risk:{}", r.id));
        let level = |scale: &[String], i: u32| {
            scale
                .get(usize::try_from(i).unwrap_or(usize::MAX).wrapping_sub(1))
                .cloned()
                .unwrap_or_default()
        };
        let mut remediations = Vec::new();
        let mut any_planned = false;
        let mut deadline = None;
        for cid in &r.controls {
            let Some(c) = p.controls.iter().find(|c| &c.id == cid) else {
                continue;
            };
            let planned = c.status == "planned";
            any_planned |= planned;
            let mut rem = json!({
                "uuid": uuid_for(scope, &format!("remediation:{}:{}", r.id, c.id)),
                "lifecycle": if planned { "planned" } else { "completed" },
                "title": c.title,
                "description": if c.description.is_empty() { c.title.clone() } else { c.description.clone() },
            });
            if let (Some(due), Some(obj)) = (c.due, rem.as_object_mut()) {
                deadline = Some(deadline.map_or(due, |d: Date| d.max(due)));
                obj.insert(
                    "tasks".into(),
                    json!([{
                        "uuid": uuid_for(scope, &format!("task:{}:{}", r.id, c.id)),
                        "type": "milestone",
                        "title": format!("{} in place", c.title),
                        "timing": {"on-date": {"date": timestamp(due)}},
                    }]),
                );
            }
            remediations.push(rem);
        }
        let status = if any_planned {
            "remediating"
        } else if r.treatment.is_none() || r.treatment == Some(Treatment::Retain) {
            "deviation-approved"
        } else {
            "closed"
        };
        let mut risk = json!({
            "uuid": risk_uuid,
            "title": format!("{}: {}", r.id, r.title),
            "description": if r.description.is_empty() { r.title.clone() } else { r.description.clone() },
            "statement": format!(
                "Initial {} x {} (score {}); treatment: {}; residual {} x {} (score {}), accepted by {} on {}.",
                level(&p.scales.likelihood, r.likelihood),
                level(&p.scales.severity, r.severity),
                r.likelihood * r.severity,
                r.treatment.map_or("none (within acceptance criteria)", Treatment::as_str),
                level(&p.scales.likelihood, r.residual_likelihood),
                level(&p.scales.severity, r.residual_severity),
                r.residual_likelihood * r.residual_severity,
                p.risk_owner.name,
                fmt_date(p.risk_owner.approved),
            ),
            "props": [
                {"name": "risk-source", "ns": NS, "value": r.source},
                {"name": "treatment", "ns": NS, "value": r.treatment.map_or("none", Treatment::as_str)},
            ],
            "status": status,
            "characterizations": [{
                "origin": {"actors": [{"type": "party", "actor-uuid": uuid_for(scope, "party:maker")}]},
                "facets": [
                    {"name": "likelihood", "system": NS, "value": level(&p.scales.likelihood, r.likelihood)},
                    {"name": "impact", "system": NS, "value": level(&p.scales.severity, r.severity)},
                    {"name": "residual-likelihood", "system": NS, "value": level(&p.scales.likelihood, r.residual_likelihood)},
                    {"name": "residual-impact", "system": NS, "value": level(&p.scales.severity, r.residual_severity)},
                ],
            }],
        });
        if let Some(obj) = risk.as_object_mut() {
            if !remediations.is_empty() {
                obj.insert("remediations".into(), Value::Array(remediations));
            }
            if let Some(d) = deadline {
                obj.insert("deadline".into(), json!(timestamp(d)));
            }
        }
        risks.push(risk);
        items.push(json!({
            "uuid": uuid_for(scope, &format!("poam-item:{}", r.id)),
            "title": format!("{}: {}", r.id, r.title),
            "description": if r.treatment_rationale.is_empty() { "Within the acceptance criteria; retained.".to_owned() } else { r.treatment_rationale.clone() },
            "related-risks": [{"risk-uuid": risk_uuid}],
        }));
    }
    json!({"plan-of-action-and-milestones": {
        "uuid": uuid_for(scope, "poam"),
        "metadata": metadata(
            &format!("Risk treatment plan: {}", p.info.name),
            p.info.version_date,
            &p.info.version,
            parties(p),
        ),
        "import-ssp": {"href": "ssp.json"},
        "system-id": {"identifier-type": format!("{NS}/product-id"), "id": p.info.id},
        "risks": risks,
        "poam-items": items,
    }})
}
