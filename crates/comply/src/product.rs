//! The product file as written: every section optional and every value
//! spanned, so that `check` can name each gap with its line and column
//! instead of stopping at the first missing key.

use serde::Deserialize;
use serde_spanned::Spanned;
use toml::value::Datetime;

use crate::Error;

/// A value with its byte range in the product file.
pub(crate) type S<T> = Spanned<T>;

/// One product file, parsed but not yet checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductFile {
    pub(crate) product: Option<S<RawInfo>>,
    pub(crate) use_case: Option<S<RawUseCase>>,
    pub(crate) system: Option<S<RawSystem>>,
    #[serde(default)]
    pub(crate) interested_party: Vec<S<RawParty>>,
    pub(crate) constraints: Option<S<RawConstraints>>,
    pub(crate) assessment: Option<S<RawAssessment>>,
    pub(crate) scales: Option<S<RawScales>>,
    #[serde(default)]
    pub(crate) asset: Vec<S<RawAsset>>,
    #[serde(default)]
    pub(crate) risk: Vec<S<RawRisk>>,
    #[serde(default)]
    pub(crate) control: Vec<S<RawControl>>,
    #[serde(default)]
    pub(crate) feature: Vec<S<RawFeature>>,
    #[serde(default)]
    pub(crate) soa: Vec<S<RawSoa>>,
    #[serde(default)]
    pub(crate) other_standard: Vec<S<RawOtherStandard>>,
    pub(crate) risk_owner: Option<S<RawRiskOwner>>,
    pub(crate) support: Option<S<RawSupport>>,
    pub(crate) vulnerability_disclosure: Option<S<RawVdp>>,
    pub(crate) sbom: Option<S<RawSbom>>,
    #[serde(default)]
    pub(crate) component: Vec<S<RawComponent>>,
    /// The text the spans point into.
    #[serde(skip)]
    pub(crate) source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInfo {
    pub(crate) id: Option<S<String>>,
    pub(crate) name: Option<S<String>>,
    pub(crate) model: Option<S<String>>,
    pub(crate) maker: Option<S<String>>,
    pub(crate) version: Option<S<String>>,
    pub(crate) version_date: Option<S<Datetime>>,
    pub(crate) kind: Option<S<String>>,
    pub(crate) capability_class: Option<S<i64>>,
    pub(crate) website: Option<S<String>>,
    pub(crate) documentation_url: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUseCase {
    pub(crate) intended_use: Option<S<String>>,
    #[serde(default)]
    pub(crate) intended_outcomes: Vec<S<String>>,
    pub(crate) users: Option<S<String>>,
    pub(crate) environment: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSystem {
    pub(crate) context: Option<S<String>>,
    pub(crate) assessment_ref: Option<S<String>>,
    pub(crate) boundary: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawParty {
    pub(crate) name: Option<S<String>>,
    pub(crate) needs: Option<S<String>>,
    #[serde(default)]
    pub(crate) physical_effects: Vec<S<String>>,
    #[serde(default)]
    pub(crate) logical_effects: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConstraints {
    pub(crate) power: Option<S<String>>,
    pub(crate) cpu: Option<S<String>>,
    pub(crate) memory_mib: Option<S<i64>>,
    pub(crate) storage_mib: Option<S<i64>>,
    pub(crate) network: Option<S<String>>,
    pub(crate) considerations: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAssessment {
    pub(crate) separate_assessments: Option<S<bool>>,
    pub(crate) rationale: Option<S<String>>,
    pub(crate) method: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScales {
    #[serde(default)]
    pub(crate) likelihood: Vec<S<String>>,
    #[serde(default)]
    pub(crate) severity: Vec<S<String>>,
    pub(crate) acceptance: Option<S<String>>,
    pub(crate) accept_max_score: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAsset {
    pub(crate) id: Option<S<String>>,
    pub(crate) name: Option<S<String>>,
    pub(crate) description: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRisk {
    pub(crate) id: Option<S<String>>,
    pub(crate) title: Option<S<String>>,
    pub(crate) source: Option<S<String>>,
    pub(crate) description: Option<S<String>>,
    #[serde(default)]
    pub(crate) assets: Vec<S<String>>,
    pub(crate) likelihood: Option<S<String>>,
    pub(crate) severity: Option<S<String>>,
    pub(crate) evaluation: Option<S<String>>,
    pub(crate) priority: Option<S<i64>>,
    pub(crate) treatment: Option<S<String>>,
    pub(crate) treatment_rationale: Option<S<String>>,
    #[serde(default)]
    pub(crate) controls: Vec<S<String>>,
    pub(crate) residual_likelihood: Option<S<String>>,
    pub(crate) residual_severity: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub(crate) id: Option<S<String>>,
    pub(crate) title: Option<S<String>>,
    pub(crate) description: Option<S<String>>,
    #[serde(default)]
    pub(crate) features: Vec<S<String>>,
    pub(crate) status: Option<S<String>>,
    pub(crate) owner: Option<S<String>>,
    pub(crate) due: Option<S<Datetime>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFeature {
    pub(crate) id: Option<S<String>>,
    pub(crate) name: Option<S<String>>,
    pub(crate) description: Option<S<String>>,
    pub(crate) user_guidance: Option<S<String>>,
    #[serde(default)]
    pub(crate) privacy: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSoa {
    pub(crate) requirement: Option<S<String>>,
    pub(crate) status: Option<S<String>>,
    #[serde(default)]
    pub(crate) features: Vec<S<String>>,
    #[serde(default)]
    pub(crate) risks: Vec<S<String>>,
    pub(crate) justification: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOtherStandard {
    pub(crate) name: Option<S<String>>,
    pub(crate) how: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRiskOwner {
    pub(crate) name: Option<S<String>>,
    pub(crate) role: Option<S<String>>,
    pub(crate) plan_communicated: Option<S<Datetime>>,
    pub(crate) approved: Option<S<Datetime>>,
    #[serde(default)]
    pub(crate) accepted_risks: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSupport {
    pub(crate) security_updates_until: Option<S<Datetime>>,
    pub(crate) policy_url: Option<S<String>>,
    pub(crate) change_notification: Option<S<String>>,
    pub(crate) update_delivery: Option<S<String>>,
    pub(crate) communications: Option<S<String>>,
    #[serde(default)]
    pub(crate) user_responsibilities: Vec<S<String>>,
    pub(crate) licence_terms_url: Option<S<String>>,
    pub(crate) documentation_retention: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVdp {
    #[serde(default)]
    pub(crate) contact: Vec<S<String>>,
    pub(crate) policy_url: Option<S<String>>,
    pub(crate) canonical_url: Option<S<String>>,
    pub(crate) encryption: Option<S<String>>,
    #[serde(default)]
    pub(crate) preferred_languages: Vec<S<String>>,
    pub(crate) acknowledge_days: Option<S<i64>>,
    pub(crate) triage_days: Option<S<i64>>,
    pub(crate) fix_days: Option<S<i64>>,
    pub(crate) publication: Option<S<String>>,
    pub(crate) security_txt_expires: Option<S<Datetime>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSbom {
    pub(crate) cargo_manifest: Option<S<String>>,
    pub(crate) root_package: Option<S<String>>,
    pub(crate) target: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    pub(crate) name: Option<S<String>>,
    pub(crate) version: Option<S<String>>,
    pub(crate) kind: Option<S<String>>,
    pub(crate) supplier: Option<S<String>>,
    pub(crate) licence: Option<S<String>>,
    pub(crate) purl: Option<S<String>>,
    pub(crate) sha256: Option<S<String>>,
    pub(crate) description: Option<S<String>>,
}

impl ProductFile {
    /// Parses a product file. Syntax and type errors stop here with their
    /// position; everything the standard asks for is checked by
    /// [`ProductFile::check`], which reports all gaps at once.
    pub fn parse(source: &str) -> Result<Self, Error> {
        match toml::from_str::<ProductFile>(source) {
            Ok(mut file) => {
                file.source = source.to_owned();
                Ok(file)
            }
            Err(e) => {
                let (line, column) = e
                    .span()
                    .map(|s| line_col(source, s.start))
                    .unwrap_or((1, 1));
                Err(Error::Syntax {
                    line,
                    column,
                    message: e.message().to_owned(),
                })
            }
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let s = "a = 1\nbé = 2\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 6), (2, 1));
        assert_eq!(line_col(s, s.find('=').unwrap()), (1, 3));
        assert_eq!(line_col(s, s.rfind('=').unwrap()), (2, 4));
        assert_eq!(line_col(s, 10_000), (3, 1));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = ProductFile::parse("[product]\nid = \n").unwrap_err();
        match err {
            Error::Syntax { line, .. } => assert_eq!(line, 2),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(ProductFile::parse("[product]\nnmae = \"x\"\n").is_err());
    }
}
