//! The clause 5.1.1.1.5 process, checked: turns a [`ProductFile`] into a
//! [`Product`] or into every [`Gap`] at once, each with its position.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::Serialize;
use time::Date;
use toml::value::Datetime;

use crate::catalog::{self, Level, Requirement};
use crate::product::{ProductFile, S, line_col};

/// What kind of gap; each names the step of 5.1.1.1.5 (or the clause)
/// it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum GapKind {
    /// A section or value the standard needs is absent or empty.
    Missing,
    /// A value is malformed or out of range (scale level, date, id).
    Invalid,
    /// Two entries share an id.
    Duplicate,
    /// An id names nothing defined in the file.
    UnknownReference,
    /// A risk without likelihood or severity (analysis).
    UnanalysedRisk,
    /// A risk without an evaluation, or accepted above the criteria.
    UnevaluatedRisk,
    /// A risk above the acceptance criteria without a treatment, or whose
    /// treatment needs controls it does not name (steps b and c).
    UntreatedRisk,
    /// A control traced to no feature (step d).
    ControlWithoutFeature,
    /// A 5.2 SHALL neither included nor excluded in the SoA (step e).
    BaselineNotAddressed,
    /// A 5.2 requirement excluded (or partly) without a reason (step f).
    UnjustifiedExclusion,
    /// A 5.2 requirement included without a feature or a reason (step f).
    UnsupportedInclusion,
    /// A planned control without an owner or due date (step h).
    UnplannedControl,
    /// A residual risk not accepted by the named risk owner (step i).
    ResidualNotAccepted,
}

impl GapKind {
    /// The kebab-case name printed in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            GapKind::Missing => "missing",
            GapKind::Invalid => "invalid",
            GapKind::Duplicate => "duplicate",
            GapKind::UnknownReference => "unknown-reference",
            GapKind::UnanalysedRisk => "unanalysed-risk",
            GapKind::UnevaluatedRisk => "unevaluated-risk",
            GapKind::UntreatedRisk => "untreated-risk",
            GapKind::ControlWithoutFeature => "control-without-feature",
            GapKind::BaselineNotAddressed => "baseline-not-addressed",
            GapKind::UnjustifiedExclusion => "unjustified-exclusion",
            GapKind::UnsupportedInclusion => "unsupported-inclusion",
            GapKind::UnplannedControl => "unplanned-control",
            GapKind::ResidualNotAccepted => "residual-not-accepted",
        }
    }
}

/// One thing the product file lacks for the standard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// What kind.
    pub kind: GapKind,
    /// The clause (and step) it breaks, e.g. `5.1.1.1.5(f)`.
    pub clause: &'static str,
    /// 1-based line in the product file.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong, naming the entry.
    pub message: String,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} [{}]: {}",
            self.line,
            self.column,
            self.kind.as_str(),
            self.clause,
            self.message
        )
    }
}

/// Device or gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// An IoT device.
    Device,
    /// An IoT gateway.
    Gateway,
}

/// Identity of the product.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Token id (lowercase letters, digits, `-`).
    pub id: String,
    /// Product name.
    pub name: String,
    /// Model designation.
    pub model: String,
    /// The manufacturer.
    pub maker: String,
    /// Version of this product file (and of the documents).
    pub version: String,
    /// Date of that version: every timestamp in the outputs.
    #[serde(with = "iso_date")]
    pub version_date: Date,
    /// Device or gateway.
    pub kind: String,
    /// Capability class 1–3.
    pub capability_class: u8,
    /// Product page.
    pub website: String,
    /// Where the documents are published (5.1.2.1.2).
    pub documentation_url: String,
}

/// Intended use (5.1.1.1.2).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UseCase {
    /// What the product is for.
    pub intended_use: String,
    /// Outcomes the use case must achieve.
    pub intended_outcomes: Vec<String>,
    /// Who uses it.
    pub users: String,
    /// Where it runs.
    pub environment: String,
}

/// The system-level assessment the device assessment sits in (5.1.1.1.1).
#[derive(Debug, Clone, Default, Serialize)]
pub struct System {
    /// The system the device is part of.
    pub context: String,
    /// Reference to the system-level assessment.
    pub assessment_ref: String,
    /// The boundary of the device assessment.
    pub boundary: String,
}

/// An interested party (5.1.1.1.3).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Party {
    /// Who.
    pub name: String,
    /// What they need.
    pub needs: String,
    /// Undesired physical effects considered.
    pub physical_effects: Vec<String>,
    /// Undesired logical effects considered.
    pub logical_effects: Vec<String>,
}

/// Device constraints (5.1.1.1.4).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Constraints {
    /// Power source.
    pub power: String,
    /// Processor.
    pub cpu: String,
    /// RAM in MiB.
    pub memory_mib: i64,
    /// Flash in MiB, if stated.
    pub storage_mib: Option<i64>,
    /// Network interfaces.
    pub network: String,
    /// How the constraints shaped the assessment.
    pub considerations: String,
}

/// Step (a) and the method.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Assessment {
    /// Whether products need separate assessments.
    pub separate_assessments: bool,
    /// Why.
    pub rationale: String,
    /// Method (ISO 31000 by default).
    pub method: String,
}

/// Likelihood and severity scales and the acceptance criteria.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scales {
    /// Likelihood levels, lowest first.
    pub likelihood: Vec<String>,
    /// Severity levels, lowest first.
    pub severity: Vec<String>,
    /// Acceptance criteria in words.
    pub acceptance: String,
    /// Highest likelihood × severity score (1-based levels) accepted
    /// without treatment.
    pub accept_max_score: u32,
}

impl Scales {
    /// Whether a score is within the acceptance criteria.
    pub fn acceptable(&self, likelihood: u32, severity: u32) -> bool {
        likelihood * severity <= self.accept_max_score
    }
}

/// An asset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Asset {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
}

/// ISO 31000 treatment options (5.1.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Treatment {
    /// Avoid the risk (do not start or continue the activity).
    Avoid,
    /// Analyse further before deciding.
    FurtherAnalysis,
    /// Change the objectives.
    ChangeObjectives,
    /// Remove the risk source.
    RemoveSource,
    /// Share the risk (contracts, insurance, the user).
    Share,
    /// Retain the risk by informed decision.
    Retain,
}

impl Treatment {
    const ALL: [(&'static str, Treatment); 6] = [
        ("avoid", Treatment::Avoid),
        ("further-analysis", Treatment::FurtherAnalysis),
        ("change-objectives", Treatment::ChangeObjectives),
        ("remove-source", Treatment::RemoveSource),
        ("share", Treatment::Share),
        ("retain", Treatment::Retain),
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("retain", |(n, _)| n)
    }

    /// Whether this option works through controls.
    pub fn needs_controls(self) -> bool {
        matches!(
            self,
            Treatment::Avoid | Treatment::RemoveSource | Treatment::Share
        )
    }
}

/// A risk with its analysis, evaluation and treatment.
#[derive(Debug, Clone, Serialize)]
pub struct Risk {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Risk source (starter library id or free text).
    pub source: String,
    /// Description.
    pub description: String,
    /// Assets affected.
    pub assets: Vec<String>,
    /// Likelihood level, 1-based.
    pub likelihood: u32,
    /// Severity level, 1-based.
    pub severity: u32,
    /// `accept` or `treat`.
    pub evaluation: String,
    /// Priority (1 highest), if set.
    pub priority: Option<i64>,
    /// Treatment option, if treated.
    pub treatment: Option<Treatment>,
    /// Why that option.
    pub treatment_rationale: String,
    /// Controls the option needs.
    pub controls: Vec<String>,
    /// Residual likelihood, 1-based.
    pub residual_likelihood: u32,
    /// Residual severity, 1-based.
    pub residual_severity: u32,
}

/// A control (step c) and its place in the treatment plan (step h).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Control {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Features implementing it (step d).
    pub features: Vec<String>,
    /// `implemented` or `planned`.
    pub status: String,
    /// Who delivers it.
    pub owner: String,
    /// When a planned control is due.
    #[serde(with = "iso_date_opt")]
    pub due: Option<Date>,
}

/// A security or privacy feature of the device (step d).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Feature {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// What the user sees or does (user documentation).
    pub user_guidance: String,
    /// Whether it supports a privacy control.
    pub privacy: bool,
}

/// SoA decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SoaStatus {
    /// Fully included.
    Included,
    /// Partly included.
    Partial,
    /// Excluded.
    Excluded,
}

impl SoaStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SoaStatus::Included => "included",
            SoaStatus::Partial => "partial",
            SoaStatus::Excluded => "excluded",
        }
    }
}

/// One SoA entry.
#[derive(Debug, Clone, Serialize)]
pub struct SoaEntry {
    /// The 5.2 requirement.
    pub requirement: &'static Requirement,
    /// Decision.
    pub status: SoaStatus,
    /// Implementing features.
    pub features: Vec<String>,
    /// Linked risks.
    pub risks: Vec<String>,
    /// Reason for including or excluding.
    pub justification: String,
}

/// Another device standard applied (step g).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OtherStandard {
    /// Which.
    pub name: String,
    /// How it was applied.
    pub how: String,
}

/// The risk owner and the approval (step i).
#[derive(Debug, Clone, Serialize)]
pub struct RiskOwner {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// When the plan and residual risks were communicated.
    #[serde(with = "iso_date")]
    pub plan_communicated: Date,
    /// When the plan was approved and residual risks accepted.
    #[serde(with = "iso_date")]
    pub approved: Date,
    /// Risks whose residual level the owner accepted.
    pub accepted_risks: Vec<String>,
}

/// Security support policy (5.1.2.1.3, 5.1.2.2).
#[derive(Debug, Clone, Serialize)]
pub struct Support {
    /// Last day of security updates.
    #[serde(with = "iso_date")]
    pub security_updates_until: Date,
    /// Where the policy is published.
    pub policy_url: String,
    /// How users learn of changes to the policy.
    pub change_notification: String,
    /// How updates reach the device.
    pub update_delivery: String,
    /// How to subscribe to future communications.
    pub communications: String,
    /// The user's own security responsibilities.
    pub user_responsibilities: Vec<String>,
    /// Licence terms (scope of controls, data collected).
    pub licence_terms_url: String,
    /// How long the documentation is kept available (5.1.1.1.7).
    pub documentation_retention: String,
}

/// Vulnerability disclosure and handling (5.1.3).
#[derive(Debug, Clone, Serialize)]
pub struct Vdp {
    /// Contact URIs (`mailto:`, `https:`, `tel:`).
    pub contact: Vec<String>,
    /// Where the policy is published.
    pub policy_url: String,
    /// Canonical URL of security.txt.
    pub canonical_url: String,
    /// Key for encrypted reports.
    pub encryption: String,
    /// Languages for reports.
    pub preferred_languages: Vec<String>,
    /// Days to acknowledge a report.
    pub acknowledge_days: i64,
    /// Days to triage.
    pub triage_days: i64,
    /// Target days to a fix.
    pub fix_days: i64,
    /// How publication is coordinated.
    pub publication: String,
    /// security.txt Expires.
    #[serde(with = "iso_date")]
    pub security_txt_expires: Date,
}

/// Where the SBOM's Rust components come from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SbomSource {
    /// Cargo.toml of the workspace, relative to the product file.
    pub cargo_manifest: String,
    /// The package that is the device binary.
    pub root_package: String,
    /// Target triple to filter platform dependencies.
    pub target: String,
}

/// A component the maker declares (OS packages, firmware blobs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Component {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// CycloneDX type: application, library, operating-system, firmware, file.
    pub kind: String,
    /// Supplier.
    pub supplier: String,
    /// SPDX licence expression.
    pub licence: String,
    /// Package URL.
    pub purl: String,
    /// SHA-256 (hex).
    pub sha256: String,
    /// Description.
    pub description: String,
}

/// A product file that passed every check: the only input the document
/// generators accept, so a document is never built from a file with gaps.
/// `#[non_exhaustive]`: only [`ProductFile::check`] can make one.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Product {
    /// Identity.
    pub info: Info,
    /// Use case.
    pub use_case: UseCase,
    /// System context.
    pub system: System,
    /// Interested parties.
    pub parties: Vec<Party>,
    /// Constraints.
    pub constraints: Constraints,
    /// Step (a).
    pub assessment: Assessment,
    /// Scales.
    pub scales: Scales,
    /// Assets.
    pub assets: Vec<Asset>,
    /// Risks.
    pub risks: Vec<Risk>,
    /// Controls.
    pub controls: Vec<Control>,
    /// Features.
    pub features: Vec<Feature>,
    /// SoA entries, in clause order.
    pub soa: Vec<SoaEntry>,
    /// Other standards.
    pub other_standards: Vec<OtherStandard>,
    /// Risk owner.
    pub risk_owner: RiskOwner,
    /// Support policy.
    pub support: Support,
    /// Disclosure policy.
    pub vdp: Vdp,
    /// SBOM source.
    pub sbom: Option<SbomSource>,
    /// Declared components.
    pub components: Vec<Component>,
}

mod iso_date {
    use serde::Serializer;
    use time::Date;

    pub(super) fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_date(*d))
    }
}

mod iso_date_opt {
    use serde::Serializer;
    use time::Date;

    pub(super) fn serialize<S: Serializer>(d: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::fmt_date(*d)),
            None => s.serialize_none(),
        }
    }
}

/// `YYYY-MM-DD`.
pub(crate) fn fmt_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

const EPOCH: Date = time::macros::date!(1970 - 01 - 01);

// Placeholders while checking: a `Product` only escapes `check` when no
// gap was found, so these values are never seen by a caller.
impl Default for Info {
    fn default() -> Self {
        Info {
            id: String::new(),
            name: String::new(),
            model: String::new(),
            maker: String::new(),
            version: String::new(),
            version_date: EPOCH,
            kind: String::new(),
            capability_class: 0,
            website: String::new(),
            documentation_url: String::new(),
        }
    }
}

impl Default for RiskOwner {
    fn default() -> Self {
        RiskOwner {
            name: String::new(),
            role: String::new(),
            plan_communicated: EPOCH,
            approved: EPOCH,
            accepted_risks: Vec::new(),
        }
    }
}

impl Default for Support {
    fn default() -> Self {
        Support {
            security_updates_until: EPOCH,
            policy_url: String::new(),
            change_notification: String::new(),
            update_delivery: String::new(),
            communications: String::new(),
            user_responsibilities: Vec::new(),
            licence_terms_url: String::new(),
            documentation_retention: String::new(),
        }
    }
}

impl Default for Vdp {
    fn default() -> Self {
        Vdp {
            contact: Vec::new(),
            policy_url: String::new(),
            canonical_url: String::new(),
            encryption: String::new(),
            preferred_languages: Vec::new(),
            acknowledge_days: 0,
            triage_days: 0,
            fix_days: 0,
            publication: String::new(),
            security_txt_expires: EPOCH,
        }
    }
}

struct Ctx<'a> {
    source: &'a str,
    gaps: Vec<Gap>,
}

impl Ctx<'_> {
    fn gap(&mut self, kind: GapKind, clause: &'static str, at: &Range<usize>, message: String) {
        let (line, column) = line_col(self.source, at.start);
        self.gaps.push(Gap {
            kind,
            clause,
            line,
            column,
            message,
        });
    }

    /// A required, non-empty text value.
    fn text(
        &mut self,
        value: &Option<S<String>>,
        table: &Range<usize>,
        key: &str,
        clause: &'static str,
    ) -> String {
        match value {
            Some(v) if !v.get_ref().trim().is_empty() => v.get_ref().trim().to_owned(),
            Some(v) => {
                self.gap(
                    GapKind::Missing,
                    clause,
                    &v.span(),
                    format!("`{key}` is empty"),
                );
                String::new()
            }
            None => {
                self.gap(
                    GapKind::Missing,
                    clause,
                    table,
                    format!("`{key}` is missing"),
                );
                String::new()
            }
        }
    }

    fn opt_text(value: &Option<S<String>>) -> String {
        value
            .as_ref()
            .map(|v| v.get_ref().trim().to_owned())
            .unwrap_or_default()
    }

    fn list(
        &mut self,
        values: &[S<String>],
        table: &Range<usize>,
        key: &str,
        clause: &'static str,
    ) -> Vec<String> {
        let out: Vec<String> = values
            .iter()
            .map(|v| v.get_ref().trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if out.is_empty() {
            self.gap(
                GapKind::Missing,
                clause,
                table,
                format!("`{key}` lists nothing"),
            );
        }
        out
    }

    fn date(
        &mut self,
        value: &Option<S<Datetime>>,
        table: &Range<usize>,
        key: &str,
        clause: &'static str,
    ) -> Date {
        match value {
            Some(v) => match to_date(v.get_ref()) {
                Some(d) => d,
                None => {
                    self.gap(
                        GapKind::Invalid,
                        clause,
                        &v.span(),
                        format!("`{key}` must be a date (YYYY-MM-DD)"),
                    );
                    EPOCH
                }
            },
            None => {
                self.gap(
                    GapKind::Missing,
                    clause,
                    table,
                    format!("`{key}` is missing"),
                );
                EPOCH
            }
        }
    }

    fn section<'t, T>(
        &mut self,
        value: &'t Option<S<T>>,
        name: &str,
        clause: &'static str,
    ) -> Option<(&'t T, Range<usize>)> {
        match value {
            Some(v) => Some((v.get_ref(), v.span())),
            None => {
                self.gap(
                    GapKind::Missing,
                    clause,
                    &(0..0),
                    format!("section [{name}] is missing"),
                );
                None
            }
        }
    }
}

fn to_date(d: &Datetime) -> Option<Date> {
    if d.time.is_some() || d.offset.is_some() {
        return None;
    }
    let date = d.date?;
    let month = time::Month::try_from(date.month).ok()?;
    Date::from_calendar_date(i32::from(date.year), month, date.day).ok()
}

fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Collects ids of a list of tables, reporting duplicates and bad ids.
fn ids<T>(
    ctx: &mut Ctx<'_>,
    items: &[S<T>],
    id: impl Fn(&T) -> &Option<S<String>>,
    what: &str,
    clause: &'static str,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for item in items {
        match id(item.get_ref()) {
            Some(v) => {
                let s = v.get_ref().trim();
                if !is_token(s) {
                    ctx.gap(
                        GapKind::Invalid,
                        clause,
                        &v.span(),
                        format!("{what} id {s:?} must start with a letter and hold only letters, digits, '-', '_' or '.'"),
                    );
                } else if !seen.insert(s.to_owned()) {
                    ctx.gap(
                        GapKind::Duplicate,
                        clause,
                        &v.span(),
                        format!("{what} id {s:?} is used twice"),
                    );
                }
            }
            None => ctx.gap(
                GapKind::Missing,
                clause,
                &item.span(),
                format!("a {what} has no `id`"),
            ),
        }
    }
    seen
}

impl ProductFile {
    /// Runs every check of clauses 5.1.1 to 5.1.3 and returns the checked
    /// product, or every gap found, in file order.
    pub fn check(&self) -> Result<Product, Vec<Gap>> {
        let mut ctx = Ctx {
            source: &self.source,
            gaps: Vec::new(),
        };
        let c = &mut ctx;

        // Identity.
        let mut info = Info::default();
        if let Some((p, at)) = c.section(&self.product, "product", "5.1.1.1.1") {
            info.id = c.text(&p.id, &at, "id", "5.1.1.1.1");
            if !info.id.is_empty()
                && !info
                    .id
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
                && let Some(v) = &p.id
            {
                c.gap(
                    GapKind::Invalid,
                    "5.1.1.1.1",
                    &v.span(),
                    "product `id` must hold only lowercase letters, digits and '-'".into(),
                );
            }
            info.name = c.text(&p.name, &at, "name", "5.1.1.1.1");
            info.model = c.text(&p.model, &at, "model", "5.1.2.1.1");
            info.maker = c.text(&p.maker, &at, "maker", "5.1.1.1.1");
            info.version = c.text(&p.version, &at, "version", "5.1.1.1.1");
            info.version_date = c.date(&p.version_date, &at, "version_date", "5.1.1.1.1");
            info.kind = c.text(&p.kind, &at, "kind", "5.1.1.1.1");
            if !info.kind.is_empty()
                && info.kind != "device"
                && info.kind != "gateway"
                && let Some(v) = &p.kind
            {
                c.gap(
                    GapKind::Invalid,
                    "5.1.1.1.1",
                    &v.span(),
                    "`kind` must be \"device\" or \"gateway\"".into(),
                );
            }
            match &p.capability_class {
                Some(v) if (1..=3).contains(v.get_ref()) => {
                    info.capability_class = u8::try_from(*v.get_ref()).unwrap_or(1);
                }
                Some(v) => c.gap(
                    GapKind::Invalid,
                    "5.1.1.1.1",
                    &v.span(),
                    "`capability_class` must be 1, 2 or 3".into(),
                ),
                None => c.gap(
                    GapKind::Missing,
                    "5.1.1.1.1",
                    &at,
                    "`capability_class` is missing".into(),
                ),
            }
            info.website = c.text(&p.website, &at, "website", "5.1.2.1.2");
            info.documentation_url =
                c.text(&p.documentation_url, &at, "documentation_url", "5.1.2.1.2");
        }

        // 5.1.1.1.2: intended use and outcomes.
        let mut use_case = UseCase::default();
        if let Some((u, at)) = c.section(&self.use_case, "use_case", "5.1.1.1.2") {
            use_case.intended_use = c.text(&u.intended_use, &at, "intended_use", "5.1.1.1.2");
            use_case.intended_outcomes =
                c.list(&u.intended_outcomes, &at, "intended_outcomes", "5.1.1.1.2");
            use_case.users = Ctx::opt_text(&u.users);
            use_case.environment = Ctx::opt_text(&u.environment);
        }

        // 5.1.1.1.1: the system-level context.
        let mut system = System::default();
        if let Some((s, at)) = c.section(&self.system, "system", "5.1.1.1.1") {
            system.context = c.text(&s.context, &at, "context", "5.1.1.1.1");
            system.assessment_ref = c.text(&s.assessment_ref, &at, "assessment_ref", "5.1.1.1.1");
            system.boundary = Ctx::opt_text(&s.boundary);
        }

        // 5.1.1.1.3: interested parties, physical and logical effects.
        let mut parties = Vec::new();
        if self.interested_party.is_empty() {
            c.gap(
                GapKind::Missing,
                "5.1.1.1.3",
                &(0..0),
                "no [[interested_party]]: the assessment must consider the needs of interested parties".into(),
            );
        }
        for p in &self.interested_party {
            let at = p.span();
            let p = p.get_ref();
            parties.push(Party {
                name: c.text(&p.name, &at, "name", "5.1.1.1.3"),
                needs: c.text(&p.needs, &at, "needs", "5.1.1.1.3"),
                physical_effects: p
                    .physical_effects
                    .iter()
                    .map(|s| s.get_ref().clone())
                    .collect(),
                logical_effects: p
                    .logical_effects
                    .iter()
                    .map(|s| s.get_ref().clone())
                    .collect(),
            });
        }
        if let Some(first) = self.interested_party.first() {
            if parties.iter().all(|p| p.physical_effects.is_empty()) {
                c.gap(
                    GapKind::Missing,
                    "5.1.1.1.3",
                    &first.span(),
                    "no interested party lists `physical_effects`: undesired physical effects must be considered".into(),
                );
            }
            if parties.iter().all(|p| p.logical_effects.is_empty()) {
                c.gap(
                    GapKind::Missing,
                    "5.1.1.1.3",
                    &first.span(),
                    "no interested party lists `logical_effects`: undesired logical effects must be considered".into(),
                );
            }
        }

        // 5.1.1.1.4: constraints.
        let mut constraints = Constraints::default();
        if let Some((k, at)) = c.section(&self.constraints, "constraints", "5.1.1.1.4") {
            constraints.power = c.text(&k.power, &at, "power", "5.1.1.1.4");
            constraints.cpu = c.text(&k.cpu, &at, "cpu", "5.1.1.1.4");
            match &k.memory_mib {
                Some(v) if *v.get_ref() > 0 => constraints.memory_mib = *v.get_ref(),
                Some(v) => c.gap(
                    GapKind::Invalid,
                    "5.1.1.1.4",
                    &v.span(),
                    "`memory_mib` must be positive".into(),
                ),
                None => c.gap(
                    GapKind::Missing,
                    "5.1.1.1.4",
                    &at,
                    "`memory_mib` is missing".into(),
                ),
            }
            constraints.storage_mib = k.storage_mib.as_ref().map(|v| *v.get_ref());
            constraints.network = Ctx::opt_text(&k.network);
            constraints.considerations =
                c.text(&k.considerations, &at, "considerations", "5.1.1.1.4");
        }

        // Step (a).
        let mut assessment = Assessment::default();
        if let Some((a, at)) = c.section(&self.assessment, "assessment", "5.1.1.1.5(a)") {
            match &a.separate_assessments {
                Some(v) => assessment.separate_assessments = *v.get_ref(),
                None => c.gap(
                    GapKind::Missing,
                    "5.1.1.1.5(a)",
                    &at,
                    "`separate_assessments` is missing: decide whether products need separate assessments".into(),
                ),
            }
            assessment.rationale = c.text(&a.rationale, &at, "rationale", "5.1.1.1.5(a)");
            assessment.method = a
                .method
                .as_ref()
                .map(|m| m.get_ref().clone())
                .unwrap_or_else(|| "ISO 31000:2018".to_owned());
        }

        // Scales and acceptance criteria (5.1.1.2).
        let mut scales = Scales::default();
        if let Some((s, at)) = c.section(&self.scales, "scales", "5.1.1.2") {
            scales.likelihood = s.likelihood.iter().map(|v| v.get_ref().clone()).collect();
            scales.severity = s.severity.iter().map(|v| v.get_ref().clone()).collect();
            for (name, len) in [
                ("likelihood", scales.likelihood.len()),
                ("severity", scales.severity.len()),
            ] {
                if !(2..=10).contains(&len) {
                    c.gap(
                        GapKind::Invalid,
                        "5.1.1.2",
                        &at,
                        format!("the `{name}` scale needs 2 to 10 levels, it has {len}"),
                    );
                }
            }
            scales.acceptance = c.text(&s.acceptance, &at, "acceptance", "5.1.1.2");
            match &s.accept_max_score {
                Some(v) if *v.get_ref() >= 1 => {
                    scales.accept_max_score = u32::try_from(*v.get_ref()).unwrap_or(u32::MAX);
                }
                Some(v) => c.gap(
                    GapKind::Invalid,
                    "5.1.1.2",
                    &v.span(),
                    "`accept_max_score` must be at least 1".into(),
                ),
                None => c.gap(
                    GapKind::Missing,
                    "5.1.1.2",
                    &at,
                    "`accept_max_score` is missing: state the acceptance criteria as a score"
                        .into(),
                ),
            }
        }

        // Ids first, so references can be checked in any order.
        let asset_ids = ids(c, &self.asset, |a| &a.id, "asset", "5.1.1.1.1");
        let risk_ids = ids(c, &self.risk, |r| &r.id, "risk", "5.1.1.2");
        let control_ids = ids(c, &self.control, |r| &r.id, "control", "5.1.1.1.5(c)");
        let feature_ids = ids(c, &self.feature, |r| &r.id, "feature", "5.1.1.1.5(d)");

        let assets: Vec<Asset> = self
            .asset
            .iter()
            .map(|a| {
                let at = a.span();
                let a = a.get_ref();
                Asset {
                    id: Ctx::opt_text(&a.id),
                    name: c.text(&a.name, &at, "name", "5.1.1.1.1"),
                    description: Ctx::opt_text(&a.description),
                }
            })
            .collect();

        // Risks: identification, analysis, evaluation, treatment.
        if self.risk.is_empty() {
            c.gap(
                GapKind::Missing,
                "5.1.1.1.1",
                &(0..0),
                "no [[risk]]: the risk assessment identifies no risk".into(),
            );
        }
        let mut risks = Vec::new();
        for r in &self.risk {
            let at = r.span();
            let raw = r.get_ref();
            let id = Ctx::opt_text(&raw.id);
            let name = if id.is_empty() {
                "a risk".to_owned()
            } else {
                format!("risk {id}")
            };
            let title = c.text(&raw.title, &at, "title", "5.1.1.2");
            let source = c.text(&raw.source, &at, "source", "5.1.1.2");
            let description = Ctx::opt_text(&raw.description);
            let assets_of = refs(c, &raw.assets, &asset_ids, "asset", "5.1.1.1.1");
            let level = |c: &mut Ctx<'_>,
                         v: &Option<S<String>>,
                         scale: &[String],
                         key: &str,
                         kind: GapKind,
                         clause: &'static str|
             -> u32 {
                match v {
                    Some(v) => match scale.iter().position(|l| l == v.get_ref().trim()) {
                        Some(i) => u32::try_from(i + 1).unwrap_or(u32::MAX),
                        None => {
                            c.gap(
                                GapKind::Invalid,
                                clause,
                                &v.span(),
                                format!(
                                    "{name}: `{key}` {:?} is not on the scale ({})",
                                    v.get_ref(),
                                    scale.join(", ")
                                ),
                            );
                            0
                        }
                    },
                    None => {
                        c.gap(
                            kind,
                            clause,
                            &at,
                            format!("{name} has no `{key}`: analyse its likelihood and severity"),
                        );
                        0
                    }
                }
            };
            let likelihood = level(
                c,
                &raw.likelihood,
                &scales.likelihood,
                "likelihood",
                GapKind::UnanalysedRisk,
                "5.1.1.2",
            );
            let severity = level(
                c,
                &raw.severity,
                &scales.severity,
                "severity",
                GapKind::UnanalysedRisk,
                "5.1.1.2",
            );
            let analysed = likelihood > 0 && severity > 0;
            let above =
                analysed && scales.accept_max_score > 0 && !scales.acceptable(likelihood, severity);

            // Evaluation against the acceptance criteria.
            let evaluation = match &raw.evaluation {
                Some(v) => {
                    let e = v.get_ref().trim();
                    if e != "accept" && e != "treat" {
                        c.gap(
                            GapKind::Invalid,
                            "5.1.1.2",
                            &v.span(),
                            format!("{name}: `evaluation` must be \"accept\" or \"treat\""),
                        );
                    } else if e == "accept" && above {
                        c.gap(
                            GapKind::UnevaluatedRisk,
                            "5.1.1.2",
                            &v.span(),
                            format!("{name} is evaluated \"accept\" but its score {} is above the acceptance criteria ({})", likelihood * severity, scales.accept_max_score),
                        );
                    }
                    e.to_owned()
                }
                None => {
                    c.gap(GapKind::UnevaluatedRisk, "5.1.1.2", &at, format!("{name} has no `evaluation`: evaluate it against the acceptance criteria (\"accept\" or \"treat\")"));
                    String::new()
                }
            };

            // Treatment (steps b and c).
            let treatment = match &raw.treatment {
                Some(v) => match Treatment::ALL
                    .iter()
                    .find(|(n, _)| *n == v.get_ref().trim())
                {
                    Some((_, t)) => Some(*t),
                    None => {
                        c.gap(
                            GapKind::Invalid,
                            "5.1.1.1.5(b)",
                            &v.span(),
                            format!("{name}: `treatment` must be one of avoid, further-analysis, change-objectives, remove-source, share, retain"),
                        );
                        None
                    }
                },
                None => None,
            };
            if raw.treatment.is_none() && (above || evaluation == "treat") {
                c.gap(
                    GapKind::UntreatedRisk,
                    "5.1.1.1.5(b)",
                    &at,
                    format!("{name} is above the acceptance criteria (or evaluated \"treat\") but has no `treatment`"),
                );
            }
            let controls = refs(c, &raw.controls, &control_ids, "control", "5.1.1.1.5(c)");
            if let Some(t) = treatment {
                if t.needs_controls() && raw.controls.is_empty() {
                    c.gap(
                        GapKind::UntreatedRisk,
                        "5.1.1.1.5(c)",
                        &raw.treatment.as_ref().map_or(at.clone(), |v| v.span()),
                        format!(
                            "{name}: treatment \"{}\" needs controls, but `controls` lists none",
                            t.as_str()
                        ),
                    );
                }
                if raw.treatment_rationale.is_none() {
                    c.gap(
                        GapKind::Missing,
                        "5.1.1.1.5(b)",
                        &at,
                        format!("{name}: `treatment_rationale` is missing"),
                    );
                }
            }
            let treatment_rationale = Ctx::opt_text(&raw.treatment_rationale);

            // Residual risk: defaults to the initial level when untreated.
            let (residual_likelihood, residual_severity) = if treatment.is_some() {
                (
                    level(
                        c,
                        &raw.residual_likelihood,
                        &scales.likelihood,
                        "residual_likelihood",
                        GapKind::UnanalysedRisk,
                        "5.1.1.1.5(i)",
                    ),
                    level(
                        c,
                        &raw.residual_severity,
                        &scales.severity,
                        "residual_severity",
                        GapKind::UnanalysedRisk,
                        "5.1.1.1.5(i)",
                    ),
                )
            } else {
                (likelihood, severity)
            };
            risks.push(Risk {
                id,
                title,
                source,
                description,
                assets: assets_of,
                likelihood,
                severity,
                evaluation,
                priority: raw.priority.as_ref().map(|p| *p.get_ref()),
                treatment,
                treatment_rationale,
                controls,
                residual_likelihood,
                residual_severity,
            });
        }

        // Controls (step c), traced to features (step d), planned (step h).
        let mut controls = Vec::new();
        for k in &self.control {
            let at = k.span();
            let raw = k.get_ref();
            let id = Ctx::opt_text(&raw.id);
            let name = format!("control {id}");
            let features = refs(c, &raw.features, &feature_ids, "feature", "5.1.1.1.5(d)");
            if raw.features.is_empty() {
                c.gap(
                    GapKind::ControlWithoutFeature,
                    "5.1.1.1.5(d)",
                    &at,
                    format!("{name} is traced to no feature: list the device features that implement it in `features`"),
                );
            }
            let status = match &raw.status {
                Some(v) if v.get_ref() == "implemented" || v.get_ref() == "planned" => {
                    v.get_ref().clone()
                }
                Some(v) => {
                    c.gap(
                        GapKind::Invalid,
                        "5.1.1.1.5(h)",
                        &v.span(),
                        format!("{name}: `status` must be \"implemented\" or \"planned\""),
                    );
                    String::new()
                }
                None => {
                    c.gap(
                        GapKind::Missing,
                        "5.1.1.1.5(h)",
                        &at,
                        format!("{name}: `status` is missing"),
                    );
                    String::new()
                }
            };
            let owner = Ctx::opt_text(&raw.owner);
            let due = raw.due.as_ref().and_then(|d| to_date(d.get_ref()));
            if status == "planned" && (owner.is_empty() || due.is_none()) {
                c.gap(
                    GapKind::UnplannedControl,
                    "5.1.1.1.5(h)",
                    &at,
                    format!(
                        "{name} is planned but the treatment plan needs its `owner` and `due` date"
                    ),
                );
            }
            controls.push(Control {
                id,
                title: c.text(&raw.title, &at, "title", "5.1.1.1.5(c)"),
                description: Ctx::opt_text(&raw.description),
                features,
                status,
                owner,
                due,
            });
        }
        // A control no risk needs is not an error, but a control a risk
        // names must exist: checked in `refs` above.

        // Features (step d).
        let mut features = Vec::new();
        for f in &self.feature {
            let at = f.span();
            let raw = f.get_ref();
            features.push(Feature {
                id: Ctx::opt_text(&raw.id),
                name: c.text(&raw.name, &at, "name", "5.1.1.1.5(d)"),
                description: c.text(&raw.description, &at, "description", "5.1.2.1.1"),
                user_guidance: Ctx::opt_text(&raw.user_guidance),
                privacy: raw.privacy.as_ref().is_some_and(|p| *p.get_ref()),
            });
        }

        // SoA (steps e and f).
        let mut soa: BTreeMap<&'static str, SoaEntry> = BTreeMap::new();
        for e in &self.soa {
            let at = e.span();
            let raw = e.get_ref();
            let Some(req_value) = &raw.requirement else {
                c.gap(
                    GapKind::Missing,
                    "5.1.1.1.5(f)",
                    &at,
                    "an [[soa]] entry has no `requirement`".into(),
                );
                continue;
            };
            let clause = req_value.get_ref().trim();
            let Some(requirement) = catalog::requirement(clause).filter(|r| r.is_baseline()) else {
                c.gap(
                    GapKind::UnknownReference,
                    "5.1.1.1.5(f)",
                    &req_value.span(),
                    format!("{clause:?} is not a clause 5.2 requirement of ISO/IEC 27402"),
                );
                continue;
            };
            if soa.contains_key(requirement.clause) {
                c.gap(
                    GapKind::Duplicate,
                    "5.1.1.1.5(f)",
                    &req_value.span(),
                    format!("{clause} has two SoA entries"),
                );
                continue;
            }
            let status = match raw.status.as_ref().map(|s| s.get_ref().trim()) {
                Some("included") => SoaStatus::Included,
                Some("partial") => SoaStatus::Partial,
                Some("excluded") => SoaStatus::Excluded,
                Some(other) => {
                    let span = raw.status.as_ref().map_or(at.clone(), |s| s.span());
                    c.gap(
                        GapKind::Invalid,
                        "5.1.1.1.5(f)",
                        &span,
                        format!(
                            "{clause}: `status` {other:?} must be included, partial or excluded"
                        ),
                    );
                    continue;
                }
                None => {
                    c.gap(
                        GapKind::Missing,
                        "5.1.1.1.5(f)",
                        &at,
                        format!("{clause}: `status` is missing"),
                    );
                    continue;
                }
            };
            let features_of = refs(c, &raw.features, &feature_ids, "feature", "5.1.1.1.5(f)");
            let risks_of = refs(c, &raw.risks, &risk_ids, "risk", "5.1.1.1.5(f)");
            let justification = Ctx::opt_text(&raw.justification);
            match status {
                SoaStatus::Excluded | SoaStatus::Partial if justification.is_empty() => c.gap(
                    GapKind::UnjustifiedExclusion,
                    "5.1.1.1.5(f)",
                    &at,
                    format!("{clause} is {} without a `justification`", status.as_str()),
                ),
                SoaStatus::Included | SoaStatus::Partial if raw.features.is_empty() => c.gap(
                    GapKind::UnsupportedInclusion,
                    "5.1.1.1.5(f)",
                    &at,
                    format!("{clause} is {} but names no implementing feature in `features`", status.as_str()),
                ),
                SoaStatus::Included if justification.is_empty() => c.gap(
                    GapKind::UnsupportedInclusion,
                    "5.1.1.1.5(f)",
                    &at,
                    format!("{clause} is included without a `justification` (the reason for including it)"),
                ),
                _ => {}
            }
            soa.insert(
                requirement.clause,
                SoaEntry {
                    requirement,
                    status,
                    features: features_of,
                    risks: risks_of,
                    justification,
                },
            );
        }
        // Step (e): every 5.2 SHALL has a decision.
        let soa_end = self.soa.last().map_or(0..0, |e| e.span());
        for r in catalog::baseline_shalls() {
            if !soa.contains_key(r.clause)
                && !self.soa.iter().any(|e| {
                    e.get_ref()
                        .requirement
                        .as_ref()
                        .is_some_and(|q| q.get_ref().trim() == r.clause)
                })
            {
                c.gap(
                    GapKind::BaselineNotAddressed,
                    "5.1.1.1.5(e)",
                    &soa_end,
                    format!(
                        "baseline requirement {} ({}) is neither included nor excluded in the SoA",
                        r.clause, r.text
                    ),
                );
            }
        }
        let soa: Vec<SoaEntry> = catalog::REQUIREMENTS
            .iter()
            .filter_map(|r| soa.remove(r.clause))
            .collect();

        // Step (g).
        let other_standards = self
            .other_standard
            .iter()
            .map(|o| {
                let at = o.span();
                let o = o.get_ref();
                OtherStandard {
                    name: c.text(&o.name, &at, "name", "5.1.1.1.5(g)"),
                    how: c.text(&o.how, &at, "how", "5.1.1.1.5(g)"),
                }
            })
            .collect();

        // Step (i): the risk owner accepts every residual risk.
        let mut risk_owner = RiskOwner::default();
        if let Some((o, at)) = c.section(&self.risk_owner, "risk_owner", "5.1.1.1.5(i)") {
            risk_owner.name = c.text(&o.name, &at, "name", "5.1.1.1.5(i)");
            risk_owner.role = c.text(&o.role, &at, "role", "5.1.1.1.5(i)");
            risk_owner.plan_communicated = c.date(
                &o.plan_communicated,
                &at,
                "plan_communicated",
                "5.1.1.1.5(i)",
            );
            risk_owner.approved = c.date(&o.approved, &at, "approved", "5.1.1.1.5(i)");
            risk_owner.accepted_risks =
                refs(c, &o.accepted_risks, &risk_ids, "risk", "5.1.1.1.5(i)");
            if o.approved.is_some()
                && o.plan_communicated.is_some()
                && risk_owner.approved < risk_owner.plan_communicated
            {
                let span = o.approved.as_ref().map_or(at.clone(), |v| v.span());
                c.gap(
                    GapKind::Invalid,
                    "5.1.1.1.5(i)",
                    &span,
                    "`approved` is before `plan_communicated`".into(),
                );
            }
            for r in &self.risk {
                if let Some(id) = &r.get_ref().id
                    && !o
                        .accepted_risks
                        .iter()
                        .any(|a| a.get_ref().trim() == id.get_ref().trim())
                {
                    c.gap(
                        GapKind::ResidualNotAccepted,
                        "5.1.1.1.5(i)",
                        &r.span(),
                        format!("the residual risk of {} is not accepted by the risk owner: add it to [risk_owner] `accepted_risks`", id.get_ref().trim()),
                    );
                }
            }
        }

        // 5.1.2.1.3 and 5.1.2.2: the support policy.
        let mut support = Support::default();
        if let Some((s, at)) = c.section(&self.support, "support", "5.1.2.1.3") {
            support.security_updates_until = c.date(
                &s.security_updates_until,
                &at,
                "security_updates_until",
                "5.1.2.1.3",
            );
            if let Some(v) = &s.security_updates_until
                && support.security_updates_until <= info.version_date
                && support.security_updates_until != EPOCH
            {
                c.gap(
                    GapKind::Invalid,
                    "5.1.2.1.3",
                    &v.span(),
                    "`security_updates_until` must be after the product's `version_date`".into(),
                );
            }
            support.policy_url = c.text(&s.policy_url, &at, "policy_url", "5.1.2.1.3");
            support.change_notification = c.text(
                &s.change_notification,
                &at,
                "change_notification",
                "5.1.2.2",
            );
            support.update_delivery = c.text(&s.update_delivery, &at, "update_delivery", "5.1.2.2");
            support.communications = c.text(&s.communications, &at, "communications", "5.1.2.2");
            support.user_responsibilities = c.list(
                &s.user_responsibilities,
                &at,
                "user_responsibilities",
                "5.1.2.2",
            );
            support.licence_terms_url = Ctx::opt_text(&s.licence_terms_url);
            support.documentation_retention = c.text(
                &s.documentation_retention,
                &at,
                "documentation_retention",
                "5.1.1.1.7",
            );
        }

        // 5.1.3: vulnerability disclosure and handling.
        let mut vdp = Vdp::default();
        if let Some((v, at)) = c.section(
            &self.vulnerability_disclosure,
            "vulnerability_disclosure",
            "5.1.3.1.2",
        ) {
            vdp.contact = c.list(&v.contact, &at, "contact", "5.1.3.1.2");
            for contact in &v.contact {
                let s = contact.get_ref();
                if !(s.starts_with("mailto:") || s.starts_with("https://") || s.starts_with("tel:"))
                    || s.contains(char::is_whitespace)
                {
                    c.gap(
                        GapKind::Invalid,
                        "5.1.3.1.2",
                        &contact.span(),
                        format!("contact {s:?} must be a mailto:, https:// or tel: URI (RFC 9116)"),
                    );
                }
            }
            vdp.policy_url = c.text(&v.policy_url, &at, "policy_url", "5.1.3.1.1");
            vdp.canonical_url = c.text(&v.canonical_url, &at, "canonical_url", "5.1.3.1.1");
            for (value, key) in [
                (&v.policy_url, "policy_url"),
                (&v.canonical_url, "canonical_url"),
            ] {
                if let Some(u) = value
                    && !u.get_ref().starts_with("https://")
                {
                    c.gap(
                        GapKind::Invalid,
                        "5.1.3.1.1",
                        &u.span(),
                        format!("`{key}` must be an https:// URL"),
                    );
                }
            }
            vdp.encryption = Ctx::opt_text(&v.encryption);
            vdp.preferred_languages = v
                .preferred_languages
                .iter()
                .map(|l| l.get_ref().clone())
                .collect();
            let mut days = |value: &Option<S<i64>>, key: &str| -> i64 {
                match value {
                    Some(d) if (1..=365).contains(d.get_ref()) => *d.get_ref(),
                    Some(d) => {
                        c.gap(
                            GapKind::Invalid,
                            "5.1.3.2",
                            &d.span(),
                            format!("`{key}` must be 1 to 365 days"),
                        );
                        0
                    }
                    None => {
                        c.gap(
                            GapKind::Missing,
                            "5.1.3.2",
                            &at,
                            format!("`{key}` is missing"),
                        );
                        0
                    }
                }
            };
            vdp.acknowledge_days = days(&v.acknowledge_days, "acknowledge_days");
            vdp.triage_days = days(&v.triage_days, "triage_days");
            vdp.fix_days = days(&v.fix_days, "fix_days");
            vdp.publication = c.text(&v.publication, &at, "publication", "5.1.3.2");
            // RFC 9116: Expires is mandatory and should be less than a
            // year ahead; by default a day short of a year after the
            // version date, never past the end of support.
            let default_expiry = info
                .version_date
                .checked_add(time::Duration::days(364))
                .unwrap_or(info.version_date)
                .min(if support.security_updates_until > info.version_date {
                    support.security_updates_until
                } else {
                    Date::MAX
                });
            vdp.security_txt_expires = match &v.security_txt_expires {
                Some(d) => {
                    let date = c.date(
                        &v.security_txt_expires,
                        &at,
                        "security_txt_expires",
                        "5.1.3.1.2",
                    );
                    if date != EPOCH
                        && (date <= info.version_date
                            || info
                                .version_date
                                .checked_add(time::Duration::days(366))
                                .is_some_and(|limit| date > limit))
                    {
                        c.gap(GapKind::Invalid, "5.1.3.1.2", &d.span(), "`security_txt_expires` must be after the version date and less than a year later (RFC 9116)".into());
                    }
                    date
                }
                None => default_expiry,
            };
        }

        // 5.1.2.2: dependency information.
        let sbom = self.sbom.as_ref().map(|s| {
            let at = s.span();
            let s = s.get_ref();
            SbomSource {
                cargo_manifest: c.text(&s.cargo_manifest, &at, "cargo_manifest", "5.1.2.2"),
                root_package: c.text(&s.root_package, &at, "root_package", "5.1.2.2"),
                target: Ctx::opt_text(&s.target),
            }
        });
        let mut components = Vec::new();
        for k in &self.component {
            let at = k.span();
            let raw = k.get_ref();
            let kind = raw
                .kind
                .as_ref()
                .map_or("library".to_owned(), |k| k.get_ref().clone());
            if ![
                "application",
                "library",
                "operating-system",
                "firmware",
                "file",
                "framework",
                "container",
                "device",
            ]
            .contains(&kind.as_str())
            {
                let span = raw.kind.as_ref().map_or(at.clone(), |k| k.span());
                c.gap(
                    GapKind::Invalid,
                    "5.1.2.2",
                    &span,
                    format!("component `kind` {kind:?} is not a CycloneDX component type"),
                );
            }
            let sha256 = Ctx::opt_text(&raw.sha256).to_ascii_lowercase();
            if !sha256.is_empty()
                && (sha256.len() != 64 || !sha256.chars().all(|ch| ch.is_ascii_hexdigit()))
            {
                let span = raw.sha256.as_ref().map_or(at.clone(), |k| k.span());
                c.gap(
                    GapKind::Invalid,
                    "5.1.2.2",
                    &span,
                    "`sha256` must be 64 hex digits".into(),
                );
            }
            components.push(Component {
                name: c.text(&raw.name, &at, "name", "5.1.2.2"),
                version: c.text(&raw.version, &at, "version", "5.1.2.2"),
                kind,
                supplier: c.text(&raw.supplier, &at, "supplier", "5.1.2.2"),
                licence: Ctx::opt_text(&raw.licence),
                purl: Ctx::opt_text(&raw.purl),
                sha256,
                description: Ctx::opt_text(&raw.description),
            });
        }

        let mut gaps = ctx.gaps;
        gaps.sort_by_key(|g| (g.line, g.column, g.kind));
        if !gaps.is_empty() {
            return Err(gaps);
        }
        Ok(Product {
            info,
            use_case,
            system,
            parties,
            constraints,
            assessment,
            scales,
            assets,
            risks,
            controls,
            features,
            soa,
            other_standards,
            risk_owner,
            support,
            vdp,
            sbom,
            components,
        })
    }
}

/// Checks that each id names a defined entry.
fn refs(
    c: &mut Ctx<'_>,
    values: &[S<String>],
    defined: &BTreeSet<String>,
    what: &str,
    clause: &'static str,
) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        let id = v.get_ref().trim();
        if defined.contains(id) {
            out.push(id.to_owned());
        } else {
            c.gap(
                GapKind::UnknownReference,
                clause,
                &v.span(),
                format!("no {what} has id {id:?}"),
            );
        }
    }
    out
}

impl Product {
    /// Features by id.
    pub fn feature(&self, id: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.id == id)
    }

    /// The SoA decision for a clause, if any.
    pub fn soa_entry(&self, clause: &str) -> Option<&SoaEntry> {
        self.soa.iter().find(|e| e.requirement.clause == clause)
    }

    /// 5.2 requirements (SHALL and SHOULD) not fully included.
    pub fn not_included(&self) -> Vec<(&'static Requirement, Option<&SoaEntry>)> {
        catalog::REQUIREMENTS
            .iter()
            .filter(|r| r.is_baseline() && r.level != Level::Informative)
            .filter_map(|r| match self.soa_entry(r.clause) {
                Some(e) if e.status == SoaStatus::Included => None,
                other => Some((r, other)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token("R1"));
        assert!(is_token("f-unique.id_2"));
        assert!(!is_token("1R"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
    }

    #[test]
    fn dates_refuse_times() {
        let d: Datetime = "2026-03-01".parse().unwrap();
        assert_eq!(fmt_date(to_date(&d).unwrap()), "2026-03-01");
        let t: Datetime = "2026-03-01T10:00:00Z".parse().unwrap();
        assert!(to_date(&t).is_none());
    }

    #[test]
    fn an_empty_file_reports_every_missing_section() {
        let gaps = ProductFile::parse("").unwrap().check().unwrap_err();
        for section in [
            "[product]",
            "[use_case]",
            "[system]",
            "[constraints]",
            "[risk_owner]",
            "[support]",
        ] {
            assert!(
                gaps.iter().any(|g| g.message.contains(section)),
                "{section}"
            );
        }
        assert_eq!(
            gaps.iter()
                .filter(|g| g.kind == GapKind::BaselineNotAddressed)
                .count(),
            17
        );
    }
}
