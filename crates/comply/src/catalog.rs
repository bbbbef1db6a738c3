//! The requirement catalog: every SHALL and SHOULD of clause 5 of
//! ISO/IEC 27402:2023 in the project's own words (the paraphrase of
//! `shared/requirements.md`, never the standard's text), its crosswalk to
//! ETSI EN 303 645 and NIST IR 8259A, and what Bulwark does for it, read
//! from `docs/traceability.md` so the two never drift apart.

use serde::Serialize;

/// How binding a catalog entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A requirement of the standard.
    Shall,
    /// A recommendation.
    Should,
    /// Information only (examples, notes).
    Informative,
}

impl Level {
    /// The word used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Shall => "SHALL",
            Level::Should => "SHOULD",
            Level::Informative => "INFORMATIVE",
        }
    }
}

/// How a requirement relates to a provision of another document. Read as
/// "the ISO/IEC 27402 requirement is … the other provision".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Relationship {
    /// Both ask for the same thing.
    Equivalent,
    /// Ours asks for less: meeting the other provision meets ours.
    Subset,
    /// They overlap; neither implies the other.
    Intersects,
}

impl Relationship {
    /// The word used in documents and OSCAL properties.
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::Equivalent => "equivalent",
            Relationship::Subset => "subset",
            Relationship::Intersects => "intersects",
        }
    }
}

/// One mapping to another document's provision.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Crosswalk {
    /// `etsi-en-303-645` or `nist-ir-8259a`.
    pub document: &'static str,
    /// The provision id in that document (e.g. `5.1-1`).
    pub provision: &'static str,
    /// How ours relates to it.
    pub relationship: Relationship,
}

/// One requirement of clause 5.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Requirement {
    /// Clause number, e.g. `5.2.6.1.4`.
    pub clause: &'static str,
    /// SHALL, SHOULD or informative.
    pub level: Level,
    /// The subclause heading it sits under.
    pub topic: &'static str,
    /// Our paraphrase.
    pub text: &'static str,
    /// Mappings to other documents (only those we are confident of).
    pub crosswalk: &'static [Crosswalk],
}

impl Requirement {
    /// Whether this is a 5.2 device requirement (the SoA baseline).
    pub fn is_baseline(&self) -> bool {
        self.clause.starts_with("5.2.")
    }
}

const ETSI: &str = "etsi-en-303-645";
const NIST: &str = "nist-ir-8259a";

const fn x(document: &'static str, provision: &'static str, r: Relationship) -> Crosswalk {
    Crosswalk {
        document,
        provision,
        relationship: r,
    }
}

use Level::{Informative, Shall, Should};
use Relationship::{Intersects, Subset};

const fn req(
    clause: &'static str,
    level: Level,
    topic: &'static str,
    text: &'static str,
    crosswalk: &'static [Crosswalk],
) -> Requirement {
    Requirement {
        clause,
        level,
        topic,
        text,
        crosswalk,
    }
}

const RISK: &str = "Risk management";
const DISCLOSURE: &str = "Information disclosure";
const VULN: &str = "Vulnerability disclosure and handling";
const CONFIG: &str = "Configuration";
const RESET: &str = "Software reset";
const REMOVAL: &str = "User data removal";
const DATA: &str = "Protection of data";
const IFACE: &str = "Interface access";
const UPDATE: &str = "Software and firmware updates";
const NOTIFY: &str = "User notifications";

/// Every SHALL and SHOULD of clause 5, plus the informative notes the
/// device features rely on, in clause order.
pub const REQUIREMENTS: &[Requirement] = &[
    req(
        "5.1.1.1.1",
        Shall,
        RISK,
        "Keep the documented result of a device-level risk assessment, carried out in the context of a system-level assessment.",
        &[],
    ),
    req(
        "5.1.1.1.2",
        Shall,
        RISK,
        "The assessment considers the intended outcomes of the intended use case.",
        &[],
    ),
    req(
        "5.1.1.1.3",
        Shall,
        RISK,
        "The assessment considers the needs of interested parties, such as others on the same networks, including undesired physical and logical effects.",
        &[],
    ),
    req(
        "5.1.1.1.4",
        Shall,
        RISK,
        "The assessment considers that devices can be constrained in battery, memory and processing power.",
        &[],
    ),
    req(
        "5.1.1.1.5",
        Shall,
        RISK,
        "The process runs these steps: (a) decide whether products need separate assessments; (b) choose treatment options from the results; (c) determine every control the options need; (d) derive the device's security and privacy features from those controls; (e) compare them with the 5.2 baseline and check none is missing; (f) produce a Statement of Applicability with the reason for including each feature and for excluding any 5.2 feature; (g) apply any other device standard used; (h) write a risk treatment plan; (i) give the risk owner the plan and the residual risks and obtain approval or acceptance where applicable.",
        &[],
    ),
    req(
        "5.1.1.1.6",
        Shall,
        RISK,
        "The device implements what its Statement of Applicability and the other applied standards name.",
        &[],
    ),
    req(
        "5.1.1.1.7",
        Shall,
        RISK,
        "The documentation stays available for the supported lifetime of the device.",
        &[],
    ),
    req(
        "5.1.1.2",
        Should,
        RISK,
        "Follow ISO 31000: identify risks; analyse likelihood and severity; evaluate against acceptance criteria and prioritise; treat by avoiding, further analysis, changing objectives, removing the source, sharing, or retaining by informed decision.",
        &[],
    ),
    req(
        "5.1.2.1.1",
        Shall,
        DISCLOSURE,
        "User documentation lists the features that support security and privacy controls and says plainly which 5.2 requirements are not included.",
        &[],
    ),
    req(
        "5.1.2.1.2",
        Shall,
        DISCLOSURE,
        "That documentation is publicly available for as long as the device is supported.",
        &[],
    ),
    req(
        "5.1.2.1.3",
        Shall,
        DISCLOSURE,
        "A security support policy tells users in advance when security updates end.",
        &[x(ETSI, "5.3-13", Intersects)],
    ),
    req(
        "5.1.2.2",
        Should,
        DISCLOSURE,
        "Give the information at the time of sale; give post-purchase guidance on future events such as updates, with a way to receive future communications; keep a support period fit for the risk and the product lifetime, not changed lightly, with a way to learn of changes; state the user's own security responsibilities plainly; define in the licence terms the scope of the security and privacy controls and the data collected; publish machine-readable dependency information (SWID tags or an SBOM).",
        &[x(ETSI, "5.3-13", Intersects)],
    ),
    req(
        "5.1.3.1.1",
        Shall,
        VULN,
        "Keep documented vulnerability disclosure and handling processes for the supported lifetime.",
        &[x(ETSI, "5.2-1", Intersects)],
    ),
    req(
        "5.1.3.1.2",
        Shall,
        VULN,
        "Provide at least one way to receive vulnerability reports from the public.",
        &[x(ETSI, "5.2-1", Subset)],
    ),
    req(
        "5.1.3.2",
        Should,
        VULN,
        "Disclose vulnerabilities per ISO/IEC 29147 and handle them per ISO/IEC 30111.",
        &[x(ETSI, "5.2-2", Intersects), x(ETSI, "5.2-3", Intersects)],
    ),
    req(
        "5.2.2.1.1",
        Shall,
        CONFIG,
        "Only authorized entities (people or devices) can modify configuration settings.",
        &[
            x(ETSI, "5.5-5", Intersects),
            x(NIST, "device-configuration", Intersects),
        ],
    ),
    req(
        "5.2.2.1.2",
        Shall,
        CONFIG,
        "A device that can change the configuration of other devices does so only when authorized.",
        &[],
    ),
    req(
        "5.2.2.2",
        Should,
        CONFIG,
        "Transfer and store configuration in a validated format, validate its integrity before use, transmit it securely from a validated source, and confirm that settings were applied.",
        &[x(NIST, "device-configuration", Intersects)],
    ),
    req(
        "5.2.3.1.1",
        Shall,
        RESET,
        "A software reset, where offered, is secure.",
        &[],
    ),
    req(
        "5.2.3.1.2",
        Shall,
        RESET,
        "Only an authorized entity can execute a software reset.",
        &[],
    ),
    req(
        "5.2.4.1.1",
        Shall,
        REMOVAL,
        "A function deletes the appropriate user data stored on the device, in every type of memory.",
        &[x(ETSI, "5.11-1", Intersects)],
    ),
    req(
        "5.2.4.1.2",
        Shall,
        REMOVAL,
        "User data removal is restricted to authorized entities.",
        &[],
    ),
    req(
        "5.2.4.2",
        Should,
        REMOVAL,
        "Tell the user that data was securely removed; prefer removal per user; extend removal to the rest of the system (hub, cloud).",
        &[x(ETSI, "5.11-2", Intersects), x(ETSI, "5.11-4", Intersects)],
    ),
    req(
        "5.2.5.1.1",
        Shall,
        DATA,
        "Protect stored and transmitted data from unauthorized access, modification and disclosure.",
        &[
            x(ETSI, "5.5-1", Intersects),
            x(ETSI, "5.8-1", Intersects),
            x(NIST, "data-protection", Intersects),
        ],
    ),
    req(
        "5.2.5.1.2",
        Shall,
        DATA,
        "That protection covers configuration, identifying data, user data, event logs and sensitive security parameters.",
        &[
            x(ETSI, "5.4-1", Intersects),
            x(NIST, "data-protection", Intersects),
        ],
    ),
    req(
        "5.2.5.1.3",
        Shall,
        DATA,
        "Protect the software and firmware from unauthorized access and modification.",
        &[x(ETSI, "5.7-1", Intersects)],
    ),
    req(
        "5.2.5.1.4",
        Shall,
        DATA,
        "Use cryptography (authenticated encryption, hashes, signature validation) for confidentiality and integrity.",
        &[
            x(ETSI, "5.5-1", Intersects),
            x(NIST, "data-protection", Intersects),
        ],
    ),
    req(
        "5.2.5.2.1",
        Should,
        DATA,
        "At start-up check the integrity and authenticity of the software; on failure notify the user and become inoperable, run fail-safe, or recover with integrity; secure defaults; refuse or warn about insecure user choices; compartmentalization, least privilege, a small trusted computing base and memory safety.",
        &[x(ETSI, "5.7-1", Intersects), x(ETSI, "5.6-7", Intersects)],
    ),
    req(
        "5.2.5.2.2",
        Should,
        DATA,
        "Keep event logs detailed enough to spot anomalies, synchronized to an authoritative system or central repository (de-identified).",
        &[
            x(ETSI, "5.10-1", Intersects),
            x(NIST, "cybersecurity-state-awareness", Intersects),
        ],
    ),
    req(
        "5.2.5.2.3",
        Should,
        DATA,
        "Use hard-coded or shared sensitive security parameters only when unique per device and justified by the risk assessment.",
        &[x(ETSI, "5.4-3", Intersects), x(ETSI, "5.4-4", Intersects)],
    ),
    req(
        "5.2.5.3",
        Informative,
        DATA,
        "A hardware root of trust (such as a TPM) anchors the chain of trust, attestation, verified boot and key protection.",
        &[],
    ),
    req(
        "5.2.6.1.1",
        Shall,
        IFACE,
        "Logical access to interfaces is limited to authorized entities.",
        &[
            x(ETSI, "5.5-5", Intersects),
            x(NIST, "logical-access-to-interfaces", Intersects),
        ],
    ),
    req(
        "5.2.6.1.2",
        Shall,
        IFACE,
        "Interfaces use appropriate authentication and access control.",
        &[x(NIST, "logical-access-to-interfaces", Intersects)],
    ),
    req(
        "5.2.6.1.3",
        Shall,
        IFACE,
        "Creating and using identifiers is assessed for security and privacy.",
        &[x(NIST, "device-identification", Intersects)],
    ),
    req(
        "5.2.6.1.4",
        Shall,
        IFACE,
        "No common values for critical sensitive security parameters (global keys, standard passwords): each is unique per device or set by an appropriate external entity before the device goes into operation.",
        &[x(ETSI, "5.1-1", Intersects), x(ETSI, "5.4-4", Intersects)],
    ),
    req(
        "5.2.6.2",
        Should,
        IFACE,
        "The device can be logically identified; avoid persistent identifiers or tell the user; every interface can be enabled and disabled; all remote interfaces authenticate; unsupported devices are identified or blocked; all input and output is validated; remote administration resists common attacks; type-safe languages; access by user type or group; allow-lists rather than deny-lists.",
        &[
            x(ETSI, "5.6-1", Intersects),
            x(ETSI, "5.13-1", Intersects),
            x(NIST, "device-identification", Intersects),
        ],
    ),
    req(
        "5.2.7.1.1",
        Shall,
        UPDATE,
        "Software and firmware updates use a secure procedure.",
        &[
            x(ETSI, "5.3-2", Intersects),
            x(NIST, "software-update", Intersects),
        ],
    ),
    req(
        "5.2.7.1.2",
        Shall,
        UPDATE,
        "Only authorized entities can initiate updates.",
        &[x(NIST, "software-update", Intersects)],
    ),
    req(
        "5.2.7.1.3",
        Shall,
        UPDATE,
        "An interrupted update leaves the device in a state that minimizes harm.",
        &[],
    ),
    req(
        "5.2.7.2",
        Should,
        UPDATE,
        "Confirm validity, authenticity and integrity before installing; let the user choose automatic or manual download and install, a schedule and notifications; check periodically for security updates; sign updates with well-kept keys; measure updates with the hardware root of trust; warn before an update breaks basic function; on an unauthorized change alert the user and stop all traffic except the alert and recovery.",
        &[
            x(ETSI, "5.3-5", Intersects),
            x(ETSI, "5.3-6", Intersects),
            x(ETSI, "5.3-9", Intersects),
            x(ETSI, "5.3-10", Intersects),
            x(ETSI, "5.3-12", Intersects),
            x(ETSI, "5.7-2", Intersects),
        ],
    ),
    req(
        "5.2.7.3",
        Informative,
        UPDATE,
        "Discarding an update or falling back to the previous one is a valid recovery; a local hub or gateway may fetch updates for devices that cannot reach the server.",
        &[],
    ),
    req(
        "5.2.8",
        Informative,
        NOTIFY,
        "Devices that cannot show a message answer when queried, or notify through a local hub, an alarm, or a monitoring or logging device.",
        &[],
    ),
];

/// Looks a clause up.
pub fn requirement(clause: &str) -> Option<&'static Requirement> {
    REQUIREMENTS.iter().find(|r| r.clause == clause)
}

/// The 5.2 SHALLs: each needs an SoA entry.
pub fn baseline_shalls() -> impl Iterator<Item = &'static Requirement> {
    REQUIREMENTS
        .iter()
        .filter(|r| r.is_baseline() && r.level == Level::Shall)
}

/// What Bulwark does for a clause, as `docs/traceability.md` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulwarkCoverage {
    /// The clause.
    pub clause: String,
    /// `implemented`, `partial: …`, `planned (#N)` or, for the
    /// recommendations table, `implemented`.
    pub status: String,
    /// What it is, in the table's words.
    pub what: String,
    /// Source paths (repository-relative).
    pub code: Vec<String>,
    /// Tests, as `file::module::function`.
    pub tests: Vec<String>,
}

/// The traceability table, compiled in so the catalog and the table are
/// one source of truth.
const TRACEABILITY: &str = include_str!("../../../docs/traceability.md");

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Parses the rows of a traceability table (`| 5.x | … |`).
pub fn parse_traceability(text: &str) -> Vec<BulwarkCoverage> {
    text.lines()
        .filter(|l| l.starts_with("| 5."))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            match cells.as_slice() {
                [clause, what, status, code, tests] => Some(BulwarkCoverage {
                    clause: (*clause).to_owned(),
                    status: (*status).to_owned(),
                    what: (*what).to_owned(),
                    code: backticked(code),
                    tests: backticked(tests),
                }),
                [clause, what, code, tests] => Some(BulwarkCoverage {
                    clause: (*clause).to_owned(),
                    status: "implemented".to_owned(),
                    what: (*what).to_owned(),
                    code: backticked(code),
                    tests: backticked(tests),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Bulwark's own coverage of each clause, from the compiled-in table.
pub fn bulwark_coverage() -> Vec<BulwarkCoverage> {
    parse_traceability(TRACEABILITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_are_unique_and_in_order() {
        let clauses: Vec<&str> = REQUIREMENTS.iter().map(|r| r.clause).collect();
        let mut sorted = clauses.clone();
        sorted.sort_by_key(|c| {
            c.split('.')
                .map(|p| p.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        });
        sorted.dedup();
        assert_eq!(clauses, sorted);
    }

    #[test]
    fn every_shall_of_the_traceability_table_is_in_the_catalog() {
        for row in bulwark_coverage() {
            assert!(
                requirement(&row.clause).is_some(),
                "{} is in docs/traceability.md but not in the catalog",
                row.clause
            );
        }
        for r in REQUIREMENTS.iter().filter(|r| r.level == Level::Shall) {
            assert!(
                bulwark_coverage().iter().any(|c| c.clause == r.clause),
                "{} has no row in docs/traceability.md",
                r.clause
            );
        }
    }

    #[test]
    fn baseline_is_the_seventeen_device_shalls() {
        assert_eq!(baseline_shalls().count(), 17);
    }
}
