//! One connection to the TPM and the commands the store sends over it.
//!
//! Every method maps tss-esapi errors to [`keys::Error`] with the
//! operation and the handle or label concerned. Transient objects and
//! sessions are flushed on every path, errors included.

use keys::{Error, Result};
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::response_code::{Tss2ResponseCode, Tss2ResponseCodeKind};
use tss_esapi::constants::session_type::SessionType;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, SessionHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Digest, EccParameter, EccPoint, EccScheme, HashScheme, HashcheckTicket,
    KeyedHashScheme, Private, Public, PublicBuffer, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyedHashParameters, SensitiveData, Signature, SignatureScheme, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, WrapperErrorKind};
use zeroize::Zeroizing;

use crate::BACKEND;
use crate::handles::{self, STORAGE_KEY};

/// An open ESAPI context plus the TCTI text for messages.
pub(crate) struct Tpm<'a> {
    ctx: Context,
    tcti: &'a str,
}

/// A persistent object as ESAPI knows it, with its TPM name.
#[derive(Clone)]
pub(crate) struct Persisted {
    /// The ESAPI handle (closed when the context is dropped).
    pub(crate) esys: ObjectHandle,
    /// The TPM handle, e.g. 0x81000100.
    pub(crate) handle: u32,
    /// The TPM name: nameAlg followed by the digest of the public area.
    pub(crate) name: Vec<u8>,
}

/// What `create` under the storage key returned, marshalled.
pub(crate) struct Created {
    pub(crate) public: Public,
    pub(crate) private: Private,
}

impl<'a> Tpm<'a> {
    /// Connects through `conf`. Any failure here means the TPM cannot be
    /// reached: [`Error::Unavailable`] naming the TCTI.
    pub(crate) fn connect(conf: &TctiNameConf, tcti: &'a str) -> Result<Self> {
        let ctx = Context::new(conf.clone()).map_err(|e| Error::Unavailable {
            backend: BACKEND,
            detail: format!("cannot connect through TCTI {tcti:?}: {}", describe(&e)),
        })?;
        Ok(Self { ctx, tcti })
    }

    /// The ESAPI context, for the NV commands of [`crate::counter`].
    pub(crate) fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// Maps an ESAPI error of `operation` on `target` (a handle or label).
    pub(crate) fn fail(&self, operation: &'static str, target: &str, e: tss_esapi::Error) -> Error {
        tpm_error(self.tcti, operation, target, &e)
    }

    /// The TPM manufacturer's four-letter code (e.g. "IBM" for swtpm).
    pub(crate) fn manufacturer(&mut self) -> Result<String> {
        let value = self
            .ctx
            .get_tpm_property(PropertyTag::Manufacturer)
            .map_err(|e| self.fail("TPM2_GetCapability", "TPM_PT_MANUFACTURER", e))?
            .unwrap_or_default();
        Ok(value
            .to_be_bytes()
            .iter()
            .filter(|b| b.is_ascii_graphic())
            .map(|&b| char::from(b))
            .collect())
    }

    /// Looks up a persistent handle; `Ok(None)` if nothing is persisted
    /// there.
    pub(crate) fn persisted(&mut self, handle: u32) -> Result<Option<Persisted>> {
        let target = format!("persistent handle {handle:#010x}");
        let tpm_handle =
            PersistentTpmHandle::new(handle).map_err(|e| self.fail("handle check", &target, e))?;
        let esys = match self.ctx.execute_without_session(|ctx| {
            ctx.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle))
        }) {
            Ok(esys) => esys,
            Err(e) if kind(&e) == Some(Tss2ResponseCodeKind::Handle) => return Ok(None),
            Err(e) => return Err(self.fail("TPM2_ReadPublic", &target, e)),
        };
        let name = self
            .ctx
            .tr_get_name(esys)
            .map_err(|e| self.fail("Esys_TR_GetName", &target, e))?;
        Ok(Some(Persisted {
            esys,
            handle,
            name: name.value().to_vec(),
        }))
    }

    /// The public area of a persistent object.
    pub(crate) fn read_public(&mut self, object: &Persisted) -> Result<Public> {
        let (public, name, _) = self
            .ctx
            .execute_without_session(|ctx| ctx.read_public(KeyHandle::from(object.esys)))
            .map_err(|e| {
                self.fail(
                    "TPM2_ReadPublic",
                    &format!("persistent handle {:#010x}", object.handle),
                    e,
                )
            })?;
        if name.value() != object.name.as_slice() {
            return Err(Error::Corrupt {
                location: format!("TPM persistent handle {:#010x}", object.handle),
                reason: "the object changed while it was in use".to_owned(),
            });
        }
        Ok(public)
    }

    /// The storage key at [`STORAGE_KEY`], created and persisted if the
    /// handle is empty. An object there that is not a storage key is an
    /// error: it belongs to someone else and is left alone.
    pub(crate) fn storage_key(&mut self) -> Result<Persisted> {
        if let Some(srk) = self.persisted(STORAGE_KEY)? {
            let public = self.read_public(&srk)?;
            check_storage_key(&public).map_err(|reason| Error::Corrupt {
                location: format!("TPM persistent handle {STORAGE_KEY:#010x}"),
                reason: format!("expected a storage key (restricted decryption key): {reason}"),
            })?;
            return Ok(srk);
        }
        let target = format!("storage key for {STORAGE_KEY:#010x}");
        let template = storage_key_template()
            .map_err(|e| self.fail("building the object template", &target, e))?;
        let primary = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(|e| self.fail("TPM2_CreatePrimary", &target, e))?;
        let transient = ObjectHandle::from(primary.key_handle);
        self.with_transient(transient, |tpm| {
            tpm.persist(transient, STORAGE_KEY, &target)
        })?;
        tracing::info!(handle = %format!("{STORAGE_KEY:#010x}"), "created the TPM storage key");
        self.persisted(STORAGE_KEY)?.ok_or_else(|| Error::Backend {
            backend: BACKEND,
            operation: "TPM2_EvictControl",
            detail: format!("handle {STORAGE_KEY:#010x} is empty right after EvictControl"),
        })
    }

    /// Persistent handles in use inside the key range.
    pub(crate) fn used_key_handles(&mut self) -> Result<Vec<u32>> {
        let mut used = Vec::new();
        let mut next = *handles::KEYS.start();
        loop {
            let (data, more) = self
                .ctx
                .execute_without_session(|ctx| {
                    ctx.get_capability(CapabilityType::Handles, next, 64)
                })
                .map_err(|e| self.fail("TPM2_GetCapability", "persistent handles", e))?;
            let CapabilityData::Handles(list) = data else {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "TPM2_GetCapability",
                    detail: "the TPM answered with another capability".to_owned(),
                });
            };
            let batch: Vec<u32> = list.into_inner().into_iter().map(u32::from).collect();
            let Some(&last) = batch.last() else { break };
            used.extend(batch.into_iter().filter(|h| handles::KEYS.contains(h)));
            if !more || last >= *handles::KEYS.end() {
                break;
            }
            next = last + 1;
        }
        Ok(used)
    }

    /// Creates an ECDSA P-256 signing key under the storage key.
    pub(crate) fn create_signing_key(&mut self, srk: &Persisted, label: &str) -> Result<Created> {
        let target = format!("key {label:?}");
        let template = signing_key_template()
            .map_err(|e| self.fail("building the object template", &target, e))?;
        let created = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create(srk.esys.into(), template, None, None, None, None)
            })
            .map_err(|e| self.fail("TPM2_Create", &target, e))?;
        Ok(Created {
            public: created.out_public,
            private: created.out_private,
        })
    }

    /// Loads `created` under the storage key and persists it at `handle`.
    /// On failure nothing is left behind: the transient copy is flushed in
    /// every case.
    pub(crate) fn load_and_persist(
        &mut self,
        srk: &Persisted,
        created: Created,
        handle: u32,
        label: &str,
    ) -> Result<Persisted> {
        let target = format!("key {label:?} at {handle:#010x}");
        let transient = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.load(srk.esys.into(), created.private, created.public)
            })
            .map_err(|e| self.fail("TPM2_Load", &target, e))?;
        let transient = ObjectHandle::from(transient);
        self.with_transient(transient, |tpm| tpm.persist(transient, handle, &target))?;
        self.persisted(handle)?.ok_or_else(|| Error::Backend {
            backend: BACKEND,
            operation: "TPM2_EvictControl",
            detail: format!("{target}: handle is empty right after EvictControl"),
        })
    }

    /// Removes a persistent object from the TPM for good.
    pub(crate) fn evict(&mut self, object: &Persisted, label: &str) -> Result<()> {
        let target = format!("key {label:?} at {:#010x}", object.handle);
        handles::assert_ours(object.handle);
        let persistent =
            persistent(object.handle).map_err(|e| self.fail("TPM2_EvictControl", &target, e))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.evict_control(Provision::Owner, object.esys, persistent)
            })
            .map_err(|e| self.fail("TPM2_EvictControl", &target, e))?;
        Ok(())
    }

    /// ECDSA over a SHA-256 digest with a persistent key; returns (r, s).
    pub(crate) fn sign(
        &mut self,
        key: &Persisted,
        digest: &[u8],
        label: &str,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let target = format!("key {label:?} at {:#010x}", key.handle);
        let digest = Digest::try_from(digest).map_err(|e| self.fail("TPM2_Sign", &target, e))?;
        // A null ticket: the digest was computed outside the TPM, which a
        // restricted key would refuse; ours are unrestricted.
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| self.fail("TPM2_Sign", &target, e))?;
        let signature = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.sign(key.esys.into(), digest, SignatureScheme::Null, ticket)
            })
            .map_err(|e| self.fail("TPM2_Sign", &target, e))?;
        match signature {
            Signature::EcDsa(sig) => Ok((
                sig.signature_r().value().to_vec(),
                sig.signature_s().value().to_vec(),
            )),
            other => Err(Error::Backend {
                backend: BACKEND,
                operation: "TPM2_Sign",
                detail: format!(
                    "{target}: expected an ECDSA signature, got {:?}",
                    other.algorithm()
                ),
            }),
        }
    }

    /// Creates a sealed data object holding `secret` under the storage
    /// key. The secret travels to the TPM encrypted in a session salted
    /// with the storage key, so a probe on the bus does not see it.
    pub(crate) fn seal(&mut self, srk: &Persisted, secret: &[u8]) -> Result<Created> {
        let target = "a sealed data object";
        let template = sealed_object_template()
            .map_err(|e| self.fail("building the object template", target, e))?;
        let data =
            SensitiveData::try_from(secret).map_err(|e| self.fail("TPM2_Create", target, e))?;
        let created = self.with_salted_session(srk, (true, false), "TPM2_Create", |ctx| {
            ctx.create(srk.esys.into(), template, None, Some(data), None, None)
        })?;
        Ok(Created {
            public: created.out_public,
            private: created.out_private,
        })
    }

    /// Loads a sealed data object and returns its secret. The TPM refuses
    /// to load a blob whose private part or public area was modified, or
    /// that was sealed under another storage key: [`Error::UnsealFailed`].
    pub(crate) fn unseal(
        &mut self,
        srk: &Persisted,
        public: Public,
        private: Private,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let loaded = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.load(srk.esys.into(), private, public)
            });
        let transient = match loaded {
            Ok(handle) => ObjectHandle::from(handle),
            Err(e) => return Err(self.unseal_error("TPM2_Load", e)),
        };
        self.with_transient(transient, |tpm| {
            let data = tpm
                .with_salted_session(srk, (false, true), "TPM2_Unseal", |ctx| {
                    ctx.unseal(transient)
                })
                .map_err(|e| match e {
                    Error::Backend { detail, .. } => Error::UnsealFailed {
                        backend: BACKEND,
                        reason: format!("the TPM refused to unseal: {detail}"),
                    },
                    other => other,
                })?;
            Ok(Zeroizing::new(data.value().to_vec()))
        })
    }

    fn unseal_error(&self, step: &'static str, e: tss_esapi::Error) -> Error {
        match tpm_error(self.tcti, step, "sealed secret", &e) {
            unavailable @ Error::Unavailable { .. } => unavailable,
            _ => Error::UnsealFailed {
                backend: BACKEND,
                reason: format!(
                    "{step} refused the sealed object (modified, or sealed by another TPM or \
                     storage key): {}",
                    describe(&e)
                ),
            },
        }
    }

    /// Makes the transient `object` persistent at `handle`.
    fn persist(&mut self, object: ObjectHandle, handle: u32, target: &str) -> Result<()> {
        handles::assert_ours(handle);
        let persistent =
            persistent(handle).map_err(|e| self.fail("TPM2_EvictControl", target, e))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.evict_control(Provision::Owner, object, persistent)
            })
            .map_err(|e| self.fail("TPM2_EvictControl", target, e))?;
        Ok(())
    }

    /// Runs `f`, then flushes the transient `object` whatever `f` returned.
    fn with_transient<T>(
        &mut self,
        object: ObjectHandle,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let result = f(self);
        if let Err(e) = self.ctx.flush_context(object) {
            // The context flushes it again when dropped; a leak here only
            // costs a TPM object slot until then.
            tracing::warn!(error = %describe(&e), "could not flush a transient TPM object");
        }
        result
    }

    /// Runs one command in an HMAC session salted with the storage key,
    /// with parameter encryption for the command (`crypt.0`) and/or the
    /// response (`crypt.1`), then flushes the session.
    fn with_salted_session<T>(
        &mut self,
        srk: &Persisted,
        (decrypt, encrypt): (bool, bool),
        operation: &'static str,
        f: impl FnOnce(&mut Context) -> tss_esapi::Result<T>,
    ) -> Result<T> {
        let session = self
            .ctx
            .execute_without_session(|ctx| {
                ctx.start_auth_session(
                    Some(srk.esys.into()),
                    None,
                    None,
                    SessionType::Hmac,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
            })
            .map_err(|e| self.fail("TPM2_StartAuthSession", operation, e))?
            .ok_or_else(|| Error::Backend {
                backend: BACKEND,
                operation,
                detail: "the TPM returned no session".to_owned(),
            })?;
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .with_decrypt(decrypt)
            .with_encrypt(encrypt)
            .build();
        let result = self
            .ctx
            .tr_sess_set_attributes(session, attributes, mask)
            .and_then(|()| self.ctx.execute_with_session(Some(session), f))
            .map_err(|e| tpm_error(self.tcti, operation, "sealed data object", &e));
        if let Err(e) = self.ctx.flush_context(SessionHandle::from(session).into()) {
            tracing::warn!(error = %describe(&e), "could not flush a TPM session");
        }
        result
    }
}

/// Checks that a persistent key's public area is an ECDSA P-256 SHA-256
/// signing key that cannot leave the TPM, and returns its point.
pub(crate) fn signing_key_point(
    public: &Public,
) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
    let Public::Ecc {
        object_attributes: attrs,
        parameters,
        unique,
        ..
    } = public
    else {
        return Err("not an ECC key".to_owned());
    };
    if parameters.ecc_curve() != EccCurve::NistP256 {
        return Err(format!("curve is {:?}, not P-256", parameters.ecc_curve()));
    }
    if parameters.ecc_scheme() != EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)) {
        return Err(format!(
            "scheme is {:?}, not ECDSA-SHA256",
            parameters.ecc_scheme()
        ));
    }
    if !(attrs.sign_encrypt() && !attrs.decrypt() && !attrs.restricted()) {
        return Err("not an unrestricted sign-only key".to_owned());
    }
    if !(attrs.fixed_tpm() && attrs.fixed_parent() && attrs.sensitive_data_origin()) {
        return Err(
            "the private key is not bound to this TPM (fixedTPM, fixedParent, sensitiveDataOrigin)"
                .to_owned(),
        );
    }
    Ok((unique.x().value().to_vec(), unique.y().value().to_vec()))
}

/// Checks that an unmarshalled public area is a sealed data object as
/// [`sealed_object_template`] makes them, before handing it to the TPM.
pub(crate) fn check_sealed_object(public: &Public) -> std::result::Result<(), String> {
    let Public::KeyedHash {
        object_attributes: attrs,
        parameters,
        ..
    } = public
    else {
        return Err("not a keyed-hash (sealed data) object".to_owned());
    };
    if *parameters != PublicKeyedHashParameters::new(KeyedHashScheme::Null) {
        return Err("keyed-hash object has a scheme: it is a key, not sealed data".to_owned());
    }
    if attrs.sign_encrypt() || attrs.decrypt() || attrs.sensitive_data_origin() {
        return Err("object attributes are not those of sealed data".to_owned());
    }
    Ok(())
}

fn check_storage_key(public: &Public) -> std::result::Result<(), String> {
    if !matches!(public, Public::Ecc { .. } | Public::Rsa { .. }) {
        return Err("not an ECC or RSA key".to_owned());
    }
    let attrs = public.object_attributes();
    if !(attrs.restricted() && attrs.decrypt() && !attrs.sign_encrypt()) {
        return Err("not a restricted decryption key".to_owned());
    }
    if !(attrs.fixed_tpm() && attrs.fixed_parent()) {
        return Err("not fixed to this TPM (fixedTPM, fixedParent)".to_owned());
    }
    match public.symmetric_algorithm() {
        Some(SymmetricDefinitionObject::Null) | None => {
            Err("no symmetric algorithm to protect children".to_owned())
        }
        Some(_) => Ok(()),
    }
}

/// The TCG provisioning guidance's ECC P-256 SRK template (zeroed 32-byte
/// unique coordinates), so the key equals the SRK other software derives.
fn storage_key_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    let zero = EccParameter::try_from(vec![0u8; 32])?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::new(zero.clone(), zero))
        .build()
}

/// ECDSA P-256 with SHA-256, sign only, generated inside and bound to this
/// TPM.
fn signing_key_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// A keyed-hash object without a scheme: the TPM's container for a
/// caller-supplied secret that only Unseal reads back.
fn sealed_object_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_user_with_auth(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
}

fn persistent(handle: u32) -> tss_esapi::Result<Persistent> {
    Ok(Persistent::Persistent(PersistentTpmHandle::new(handle)?))
}

/// The raw TSS2_RC of an error from the TSS stack.
fn response_code(e: &tss_esapi::Error) -> Option<u32> {
    use bitfield::BitRange;
    match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => Some(rc.bit_range(31, 0)),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => Some(rc.bit_range(31, 0)),
        _ => None,
    }
}

/// TSS layers (bits 16..24 of a TSS2_RC).
const LAYER_TPM: u32 = 0;
const LAYER_ESAPI: u32 = 7;
const LAYER_SAPI: u32 = 8;
const LAYER_TCTI: u32 = 10;

fn layer(rc: u32) -> u32 {
    (rc >> 16) & 0xff
}

/// The TPM's own classification, only for codes from the TPM itself (the
/// same low bits mean something else in the software layers).
pub(crate) fn kind(e: &tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match e {
        tss_esapi::Error::Tss2Error(rc) if response_code(e).map(layer) == Some(LAYER_TPM) => {
            rc.kind()
        }
        _ => None,
    }
}

/// Whether the error means the TPM cannot be talked to at all (as
/// opposed to refusing one command).
fn is_unreachable(e: &tss_esapi::Error) -> bool {
    let Some(rc) = response_code(e) else {
        return false;
    };
    match layer(rc) {
        LAYER_TCTI => true,
        // NO_CONNECTION, TRY_AGAIN (timeout), IO_ERROR.
        LAYER_ESAPI | LAYER_SAPI => matches!(rc & 0xffff, 8..=10),
        LAYER_TPM => matches!(
            kind(e),
            Some(
                Tss2ResponseCodeKind::Initialize
                    | Tss2ResponseCodeKind::Failure
                    | Tss2ResponseCodeKind::Reboot
            )
        ),
        _ => false,
    }
}

/// A readable description of an ESAPI error with its response code.
pub(crate) fn describe(e: &tss_esapi::Error) -> String {
    let Some(rc) = response_code(e) else {
        return match e {
            tss_esapi::Error::WrapperError(WrapperErrorKind::WrongParamSize) => {
                "a value has the wrong size for the TPM (tss-esapi)".to_owned()
            }
            other => format!("{other} (tss-esapi)"),
        };
    };
    let layer_name = match layer(rc) {
        LAYER_TPM => {
            let hint = match kind(e) {
                Some(
                    Tss2ResponseCodeKind::ObjectMemory
                    | Tss2ResponseCodeKind::SessionMemory
                    | Tss2ResponseCodeKind::ObjectHandles
                    | Tss2ResponseCodeKind::SessionHandles,
                ) => {
                    "; without a resource manager other clients' leftover objects fill the \
                     TPM: use device:/dev/tpmrm0 or tabrmd, or flush them (tpm2_flushcontext -t)"
                }
                _ => "",
            };
            return format!("{e} (TPM_RC {rc:#x}){hint}");
        }
        6 => "FAPI",
        LAYER_ESAPI => "ESAPI",
        LAYER_SAPI => "SAPI",
        9 => "marshalling",
        LAYER_TCTI => "TCTI",
        11 | 12 => "resource manager",
        _ => "TSS",
    };
    let base = match rc & 0xffff {
        1 => "general failure",
        2 => "not implemented",
        3 => "bad context",
        5 => "bad reference",
        6 => "insufficient buffer",
        7 => "bad sequence",
        8 => "no connection",
        9 => "timed out (try again)",
        10 => "I/O error",
        11 => "bad value",
        12 => "not permitted",
        16 => "bad size",
        17 => "malformed response",
        19 => "insufficient response",
        20 => "incompatible TCTI",
        21 => "not supported",
        23 => "out of memory",
        24 => "bad ESAPI handle",
        27 => "response HMAC check failed",
        _ => "error",
    };
    format!("{layer_name} {base} (TSS2_RC {rc:#x})")
}

/// Maps an ESAPI error: lost contact is [`Error::Unavailable`] naming the
/// TCTI; anything else [`Error::Backend`] naming operation and target.
pub(crate) fn tpm_error(
    tcti: &str,
    operation: &'static str,
    target: &str,
    e: &tss_esapi::Error,
) -> Error {
    if is_unreachable(e) {
        Error::Unavailable {
            backend: BACKEND,
            detail: format!(
                "the TPM at TCTI {tcti:?} stopped answering during {operation} ({target}): {}",
                describe(e)
            ),
        }
    } else {
        Error::Backend {
            backend: BACKEND,
            operation,
            detail: format!("{target}: {}", describe(e)),
        }
    }
}

/// Lays out a freshly sealed object as a [`crate::sealed`] blob.
pub(crate) fn encode_sealed(created: Created) -> Result<Vec<u8>> {
    let backend = |detail: String| Error::Backend {
        backend: BACKEND,
        operation: "encoding a sealed secret",
        detail,
    };
    let public = PublicBuffer::try_from(created.public)
        .and_then(|buffer| buffer.marshall())
        .map_err(|e| backend(describe(&e)))?;
    crate::sealed::encode(&public, created.private.value()).map_err(backend)
}

/// Parses a sealed blob strictly: the layout, then the public area, which
/// must re-marshal to the very same bytes and be a sealed data object.
pub(crate) fn decode_sealed(blob: &[u8]) -> Result<(Public, Private)> {
    let rejected = |reason: String| Error::UnsealFailed {
        backend: BACKEND,
        reason,
    };
    let sections = crate::sealed::decode(blob).map_err(rejected)?;
    let public = PublicBuffer::unmarshall(sections.public)
        .and_then(Public::try_from)
        .map_err(|e| rejected(format!("the public area does not parse: {}", describe(&e))))?;
    let canonical = PublicBuffer::try_from(public.clone())
        .and_then(|buffer| buffer.marshall())
        .map_err(|e| {
            rejected(format!(
                "the public area does not re-encode: {}",
                describe(&e)
            ))
        })?;
    if canonical != sections.public {
        return Err(rejected(
            "the public area is not in canonical form (extra or altered bytes)".to_owned(),
        ));
    }
    check_sealed_object(&public).map_err(rejected)?;
    let private = Private::try_from(sections.private)
        .map_err(|e| rejected(format!("the private blob is invalid: {}", describe(&e))))?;
    Ok((public, private))
}
