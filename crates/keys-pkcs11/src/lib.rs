//! PKCS#11 keystore: signing keys generated in and held by a PKCS#11 token
//! (an HSM, a secure element, a TPM through tpm2-pkcs11, or SoftHSM2 in
//! tests), reached through `cryptoki`.
//!
//! [`Pkcs11KeyStore`] implements [`keys::KeyStore`] and [`keys::KeyAdmin`].
//! It is opened from a [`Pkcs11Config`], usually read from an RFC 7512
//! token URI (parsed strictly by [`uri`]):
//!
//! ```no_run
//! use keys::{Algorithm, KeyAdmin, KeyStore};
//! use keys_pkcs11::Pkcs11KeyStore;
//! let store = Pkcs11KeyStore::open_uri(
//!     "pkcs11:token=bulwark?module-path=/usr/lib/softhsm/libsofthsm2.so\
//!      &pin-source=file:/etc/bulwark/token-pin",
//! )?;
//! let label = "device-identity".parse()?;
//! store.generate(&label, Algorithm::EcdsaP256Sha256)?;
//! let signature = store.sign(&label, b"hello")?;
//! # Ok::<(), keys::Error>(())
//! ```
//!
//! On the token, per key: an ECDSA P-256 (or, where the token has
//! `CKM_EC_EDWARDS_KEY_PAIR_GEN` and `CKM_EDDSA`, Ed25519) key pair whose
//! halves share `CKA_LABEL` = the key label and a random 16-byte `CKA_ID`;
//! the private half is `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not
//! `CKA_EXTRACTABLE`, sign-only. For sealing, one RSA-2048 key pair
//! labelled [`SEAL_KEY_LABEL`], created on first use.
//!
//! Design decisions:
//! - **Hash in software, sign in the token.** SoftHSM2 rejects
//!   `CKM_ECDSA_SHA256`, so the message is hashed here (SHA-256) and signed
//!   with plain `CKM_ECDSA`; the raw `r || s` is DER-encoded for X.509/TLS.
//!   Ed25519 signs the message itself (`CKM_EDDSA`, pure mode).
//! - **Hybrid sealing that every token can do.** tpm2-pkcs11 cannot
//!   generate AES keys and has no `CKM_ECDH1_DERIVE`, but both it and
//!   SoftHSM2 do `CKM_RSA_PKCS_OAEP`. So [`keys::KeyStore::seal`] draws a
//!   random AES-256 data key, encrypts the secret with AES-256-GCM in
//!   software, and has the token wrap the data key with RSA-OAEP under the
//!   sealing key (SHA-256; SHA-1 where the token has nothing else, as
//!   SoftHSM 2.6); unseal needs the token's private key. The blob
//!   (see `sealed.rs`) is versioned, names the sealing key by `CKA_ID`
//!   (so a second sealing key created by a racing process does not strand
//!   blobs), and authenticates its whole header as GCM associated data.
//!   Every cryptographic failure reads the same, so unseal is no padding
//!   oracle.
//! - **One module context per process.** PKCS#11 allows one
//!   `C_Initialize` per process and `C_Finalize` would end every other
//!   user's sessions, so a module is loaded once, shared by every store,
//!   and never finalised (`module.rs`). Two stores on one token share its
//!   login state; a second store must still present the PIN that logged
//!   in.
//! - **One session per store, behind a `Mutex`.** A cryptoki `Session` is
//!   `Send` but not `Sync`. Before each operation the session is checked
//!   (`C_GetSessionInfo`); a closed session or a token that logged out is
//!   reopened and logged in again, so a token that was re-plugged is used
//!   again without reopening the store.
//! - **All-or-nothing generate, label uniqueness by convention.** PKCS#11
//!   does not enforce unique labels. `generate` refuses a label any object
//!   already carries; after generating it looks again, and if a racing
//!   process created the same label the pair with the smaller `CKA_ID`
//!   wins and the other is destroyed. A pair whose public key cannot be
//!   read back is destroyed too.
//! - **The strictest key usage each token accepts.** Signing keys are
//!   asked for with sign as their only use (no decrypt, unwrap or derive),
//!   the sealing key with decrypt only. tpm2-pkcs11 1.9 refuses such
//!   templates (every TPM key it makes can sign and decrypt) and leaks a
//!   loaded TPM object on each refused attempt, so it is recognised by its
//!   library manufacturer and asked only for what it grants; it still
//!   accepts `CKA_DERIVE` false. Other tokens that refuse are asked once
//!   and then given their defaults.
//! - **Secrets stay out of text.** The PIN is held zeroized-on-drop and
//!   never appears in `Debug`, `Display` or errors; `Debug` shows the
//!   module path and token label only.
//! - **Honest capability class.** SoftHSM2 and the IBM software TPM
//!   (swtpm, as seen through tpm2-pkcs11) are software: class 1, not
//!   hardware-backed. Any other token is taken as hardware (class 2).

mod config;
mod ec;
mod module;
mod sealed;
pub mod uri;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use aws_lc_rs::digest;
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use keys::{
    Algorithm, BackendInfo, CapabilityClass, Error, KeyAdmin, KeyInfo, KeyLabel, KeyStore,
    PublicKey, Result, SealedSecret, Signature, encoding,
};
use zeroize::Zeroizing;

use sealed::OaepHash;

pub use config::Pkcs11Config;
pub use uri::Pkcs11Uri;

pub(crate) const BACKEND: &str = "pkcs11";

/// `CKA_LABEL` of the RSA key pair that wraps sealed secrets' data keys.
pub const SEAL_KEY_LABEL: &str = "bulwark-seal";

/// Size of the sealing key.
const SEAL_KEY_BITS: u64 = 2048;

/// What we know about the token we opened.
#[derive(Debug, Clone)]
struct TokenFacts {
    label: String,
    manufacturer: String,
    model: String,
    serial: String,
    login_required: bool,
    protected_path: bool,
}

impl TokenFacts {
    /// SoftHSM2, and swtpm's IBM software TPM behind tpm2-pkcs11.
    fn is_software(&self) -> bool {
        let model: Vec<&str> = self.model.split_whitespace().collect();
        self.manufacturer.starts_with("SoftHSM")
            || (self.manufacturer == "IBM" && model == ["SW", "TPM"])
    }
}

/// A keystore on one PKCS#11 token. See the crate documentation.
pub struct Pkcs11KeyStore {
    ctx: Pkcs11,
    /// The module path as configured (for messages).
    module: PathBuf,
    /// Its canonical path: the key of the process-wide module registry.
    module_key: PathBuf,
    slot: Slot,
    token: TokenFacts,
    pin: Option<Zeroizing<Vec<u8>>>,
    mechanisms: Vec<MechanismType>,
    /// Set once the token refused RSA-OAEP over SHA-256 (SoftHSM 2.6).
    oaep_sha1_only: AtomicBool,
    /// Whether to ask for the strictest key templates (see
    /// [`Self::generate_pair`]); cleared when the token refuses them.
    strict_templates: AtomicBool,
    session: Mutex<Session>,
}

/// A `CK_UTF8CHAR` field as text: cryptoki trims the blank padding, but
/// some tokens pad with NULs (tpm2-pkcs11's model is "SW   TPM\0\0...").
fn clean(field: &str) -> String {
    field.trim_end_matches(['\0', ' ']).to_owned()
}

impl fmt::Debug for Pkcs11KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11KeyStore")
            .field("module", &self.module)
            .field("token", &self.token.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11KeyStore {
    /// Opens the store on the token a URI names, e.g.
    /// `pkcs11:token=bulwark?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/bulwark/pin`.
    pub fn open_uri(uri: &str) -> Result<Self> {
        Self::open(Pkcs11Config::from_uri(uri)?)
    }

    /// Loads the module (once per process), finds exactly one initialised
    /// token matching the configuration and logs in as the user.
    ///
    /// Errors: a missing or unloadable module, or no matching token, is
    /// [`Error::Unavailable`]; several matching tokens, or a token that
    /// needs a PIN none was given for, is [`Error::InvalidInput`]; a
    /// refused PIN is [`Error::AuthenticationFailed`] naming the token.
    pub fn open(config: Pkcs11Config) -> Result<Self> {
        let module = config.module_path().to_path_buf();
        let (ctx, module_key) = module::context(&module)?;
        let unavailable = |what: &str, e: CkError| Error::Unavailable {
            backend: BACKEND,
            detail: format!("{what} of PKCS#11 module {}: {e}", module.display()),
        };
        let selector = config.token_selector();
        let library = ctx
            .get_library_info()
            .map_err(|e| unavailable("reading the library information", e))?;
        let version = library.library_version();
        // tpm2-pkcs11 1.9 refuses templates that restrict key usage below
        // what it gives every TPM key, and each refused generate leaks a
        // loaded TPM object; never ask it.
        let strict_templates = clean(library.manufacturer_id()) != "tpm2-software.github.io";
        let library_matches = selector.matches_library(
            &clean(library.manufacturer_id()),
            &clean(library.library_description()),
            (version.major(), version.minor()),
        );
        let slots = ctx
            .get_slots_with_initialized_token()
            .map_err(|e| unavailable("listing the slots", e))?;
        let mut present = Vec::new();
        let mut matching = Vec::new();
        for slot in slots {
            let slot_info = ctx
                .get_slot_info(slot)
                .map_err(|e| unavailable("reading a slot", e))?;
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| unavailable("reading a token", e))?;
            let facts = TokenFacts {
                label: clean(info.label()),
                manufacturer: clean(info.manufacturer_id()),
                model: clean(info.model()),
                serial: clean(info.serial_number()),
                login_required: info.login_required(),
                protected_path: info.protected_authentication_path(),
            };
            present.push(format!("{:?}", facts.label));
            if library_matches
                && selector.matches_slot(
                    slot.id(),
                    &clean(slot_info.slot_description()),
                    &clean(slot_info.manufacturer_id()),
                )
                && selector.matches_token(
                    &facts.label,
                    &facts.manufacturer,
                    &facts.model,
                    &facts.serial,
                )
            {
                matching.push((slot, facts));
            }
        }
        let (slot, token) = match matching.len() {
            1 => matching.swap_remove(0),
            0 => {
                return Err(Error::Unavailable {
                    backend: BACKEND,
                    detail: format!(
                        "no token matching {selector} in PKCS#11 module {} (initialised tokens: {})",
                        module.display(),
                        if present.is_empty() {
                            "none".to_owned()
                        } else {
                            present.join(", ")
                        }
                    ),
                });
            }
            n => {
                return Err(Error::InvalidInput {
                    what: "PKCS#11 URI",
                    reason: format!(
                        "{selector} matches {n} tokens in {} ({}); add serial= or slot-id= to pick one",
                        module.display(),
                        matching
                            .iter()
                            .map(|(s, t)| format!(
                                "{:?} serial {:?} slot {}",
                                t.label,
                                t.serial,
                                s.id()
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        };
        let pin = config.resolve_pin()?;
        let mechanisms = ctx
            .get_mechanism_list(slot)
            .map_err(|e| unavailable("listing the mechanisms", e))?;
        let session = ctx.open_rw_session(slot).map_err(|e| {
            unavailable(&format!("opening a session on token {:?}", token.label), e)
        })?;
        let store = Self {
            ctx,
            module,
            module_key,
            slot,
            token,
            pin,
            mechanisms,
            oaep_sha1_only: AtomicBool::new(false),
            strict_templates: AtomicBool::new(strict_templates),
            session: Mutex::new(session),
        };
        {
            let session = store.session.lock().unwrap_or_else(PoisonError::into_inner);
            store.login(&session)?;
        }
        tracing::debug!(
            module = %store.module.display(),
            token = %store.token.label,
            "opened PKCS#11 keystore"
        );
        Ok(store)
    }

    /// The module path this store was opened with.
    pub fn module_path(&self) -> &Path {
        &self.module
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }

    /// A URI naming exactly this token (label, manufacturer, model,
    /// serial), without module or PIN.
    pub fn token_uri(&self) -> Pkcs11Uri {
        Pkcs11Uri {
            token: Some(self.token.label.clone()),
            manufacturer: Some(self.token.manufacturer.clone()),
            model: Some(self.token.model.clone()),
            serial: Some(self.token.serial.clone()),
            ..Pkcs11Uri::default()
        }
    }

    /// The signature algorithms this token can generate keys for.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519]
            .into_iter()
            .filter(|a| self.supports(*a))
            .collect()
    }

    fn supports(&self, algorithm: Algorithm) -> bool {
        mechanisms_for(algorithm).is_some_and(|(generate, sign)| {
            self.mechanisms.contains(&generate) && self.mechanisms.contains(&sign)
        })
    }

    fn token_description(&self) -> String {
        format!(
            "PKCS#11 token {:?} in {}",
            self.token.label,
            self.module.display()
        )
    }

    /// Logs `session` in as the user (if the token wants a login).
    fn login(&self, session: &Session) -> Result<()> {
        if !self.token.login_required {
            return Ok(());
        }
        let Some(pin) = &self.pin else {
            if self.token.protected_path {
                // The PIN is entered on the device itself.
                return session
                    .login(UserType::User, None)
                    .map_err(|e| self.ck_error("log in", "", e));
            }
            return Err(Error::InvalidInput {
                what: "PKCS#11 PIN",
                reason: format!(
                    "{} requires a PIN: add pin-source= or pin-value= to the URI",
                    self.token_description()
                ),
            });
        };
        module::login(&self.module_key, self.slot.id(), session, pin).map_err(|e| match e {
            module::LoginError::Refused(why) => Error::AuthenticationFailed {
                backend: BACKEND,
                what: format!("{} ({why})", self.token_description()),
            },
            module::LoginError::DifferentPin => Error::AuthenticationFailed {
                backend: BACKEND,
                what: format!(
                    "{} (this process is logged in to it with a different PIN)",
                    self.token_description()
                ),
            },
            module::LoginError::Other(e) => self.ck_error("log in", "", e),
        })
    }

    /// The store's session, checked: reopened if it was closed, logged in
    /// again if the token logged out.
    fn session(&self) -> Result<MutexGuard<'_, Session>> {
        let mut guard = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.get_session_info() {
            Ok(info) => {
                if self.token.login_required
                    && !matches!(
                        info.session_state(),
                        SessionState::RwUser | SessionState::RoUser
                    )
                {
                    self.login(&guard)?;
                }
                return Ok(guard);
            }
            Err(CkError::Pkcs11(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
                _,
            )) => {}
            Err(e) => return Err(self.ck_error("check the session", "", e)),
        }
        let fresh = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| self.ck_error("reopen the session", "", e))?;
        self.login(&fresh)?;
        *guard = fresh;
        tracing::info!(token = %self.token.label, "reopened PKCS#11 session");
        Ok(guard)
    }

    /// Maps a cryptoki error to ours, with the operation, subject (a key
    /// label, or empty) and token. Never includes the PIN: cryptoki's
    /// messages carry only the function and return value.
    fn ck_error(&self, operation: &'static str, subject: &str, e: CkError) -> Error {
        let subject = if subject.is_empty() {
            String::new()
        } else {
            format!(" {subject}")
        };
        let detail = format!(
            "cannot {operation}{subject} on {}: {e}",
            self.token_description()
        );
        match &e {
            CkError::Pkcs11(rv, _) => match rv {
                RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::CryptokiNotInitialized => Error::Unavailable {
                    backend: BACKEND,
                    detail,
                },
                RvError::PinLocked | RvError::PinExpired | RvError::UserNotLoggedIn => {
                    Error::AuthenticationFailed {
                        backend: BACKEND,
                        what: format!("{} ({rv})", self.token_description()),
                    }
                }
                _ => Error::Backend {
                    backend: BACKEND,
                    operation,
                    detail,
                },
            },
            CkError::LibraryLoading(_) => Error::Unavailable {
                backend: BACKEND,
                detail,
            },
            _ => Error::Backend {
                backend: BACKEND,
                operation,
                detail,
            },
        }
    }

    fn not_found(label: &KeyLabel) -> Error {
        Error::KeyNotFound {
            backend: BACKEND,
            label: label.to_string(),
        }
    }

    /// Our private keys (EC P-256 or Ed25519) under `label`.
    fn private_keys(
        &self,
        session: &Session,
        label: &KeyLabel,
    ) -> Result<Vec<(ObjectHandle, Algorithm, Vec<u8>)>> {
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_str().as_bytes().to_vec()),
            ])
            .map_err(|e| self.ck_error("look up", &format!("key {label:?}"), e))?;
        let mut out = Vec::new();
        for handle in handles {
            if let Some((algorithm, id)) = self.key_kind(session, handle, label.as_str())? {
                out.push((handle, algorithm, id));
            }
        }
        Ok(out)
    }

    /// The algorithm and `CKA_ID` of a key object, if it is one of our
    /// kinds.
    fn key_kind(
        &self,
        session: &Session,
        handle: ObjectHandle,
        label: &str,
    ) -> Result<Option<(Algorithm, Vec<u8>)>> {
        let attributes = session
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::EcParams,
                    AttributeType::Id,
                ],
            )
            .map_err(|e| self.ck_error("read the attributes of", &format!("key {label:?}"), e))?;
        let (mut key_type, mut params, mut id) = (None, None, Vec::new());
        for attribute in attributes {
            match attribute {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::EcParams(p) => params = Some(p),
                Attribute::Id(i) => id = i,
                _ => {}
            }
        }
        Ok(match (key_type, params) {
            (Some(t), Some(p)) => ec::algorithm_of(t, &p).map(|a| (a, id)),
            _ => None,
        })
    }

    /// The one private key under `label`.
    fn private_key(
        &self,
        session: &Session,
        label: &KeyLabel,
    ) -> Result<(ObjectHandle, Algorithm, Vec<u8>)> {
        let mut keys = self.private_keys(session, label)?;
        match keys.len() {
            0 => Err(Self::not_found(label)),
            1 => Ok(keys.swap_remove(0)),
            n => Err(Error::Corrupt {
                location: format!("{}, label {label:?}", self.token_description()),
                reason: format!("{n} private keys carry this label"),
            }),
        }
    }

    /// The public half of the pair `label`/`id`, as an SPKI.
    fn public_of(
        &self,
        session: &Session,
        label: &KeyLabel,
        id: &[u8],
        algorithm: Algorithm,
    ) -> Result<PublicKey> {
        let handle = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(label.as_str().as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(|e| self.ck_error("look up the public half of", &format!("key {label:?}"), e))?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Corrupt {
                location: format!("{}, label {label:?}", self.token_description()),
                reason: "the private key has no public key object with the same CKA_ID".into(),
            })?;
        self.read_public(session, handle, label, algorithm)
    }

    fn read_public(
        &self,
        session: &Session,
        handle: ObjectHandle,
        label: &KeyLabel,
        algorithm: Algorithm,
    ) -> Result<PublicKey> {
        let corrupt = |reason: &str| Error::Corrupt {
            location: format!("{}, label {label:?}", self.token_description()),
            reason: reason.to_owned(),
        };
        let value = session
            .get_attributes(handle, &[AttributeType::EcPoint])
            .map_err(|e| self.ck_error("read the public key of", &format!("key {label:?}"), e))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| corrupt("the public key has no CKA_EC_POINT"))?;
        let point = ec::point_from_attribute(&value, algorithm)
            .ok_or_else(|| corrupt("CKA_EC_POINT does not hold a point of the key's curve"))?;
        let spki = match algorithm {
            Algorithm::Ed25519 => encoding::ed25519_spki_from_raw(point)?,
            _ => encoding::p256_spki_from_point(point)?,
        };
        Ok(PublicKey::from_spki_der(algorithm, spki))
    }

    fn destroy(&self, session: &Session, handles: &[ObjectHandle]) {
        for handle in handles {
            if let Err(e) = session.destroy_object(*handle) {
                tracing::warn!(token = %self.token.label, error = %e, "could not destroy a key object");
            }
        }
    }

    /// The sealing key pair's (`CKA_ID`, public handle), creating the pair
    /// on first use. With several (racing creators), the smallest id wins.
    fn seal_key(&self, session: &Session) -> Result<(Vec<u8>, ObjectHandle)> {
        let label = SEAL_KEY_LABEL.as_bytes().to_vec();
        let mut ids: Vec<Vec<u8>> = Vec::new();
        let privates = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Label(label.clone()),
            ])
            .map_err(|e| self.ck_error("look up", "the sealing key", e))?;
        for handle in privates {
            let attributes = session
                .get_attributes(handle, &[AttributeType::Id])
                .map_err(|e| self.ck_error("read", "the sealing key", e))?;
            ids.extend(attributes.into_iter().filter_map(|a| match a {
                Attribute::Id(id) => Some(id),
                _ => None,
            }));
        }
        ids.sort();
        for id in ids {
            let public = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Label(label.clone()),
                    Attribute::Id(id.clone()),
                ])
                .map_err(|e| self.ck_error("look up", "the sealing public key", e))?;
            if let Some(handle) = public.into_iter().next() {
                return Ok((id, handle));
            }
        }
        if !self
            .mechanisms
            .contains(&MechanismType::RSA_PKCS_KEY_PAIR_GEN)
            || !self.mechanisms.contains(&MechanismType::RSA_PKCS_OAEP)
        {
            return Err(Error::UnsupportedAlgorithm {
                backend: BACKEND,
                algorithm: "RSA-OAEP sealing (the token lacks CKM_RSA_PKCS_KEY_PAIR_GEN or CKM_RSA_PKCS_OAEP)"
                    .into(),
            });
        }
        let id = sealed::new_key_id()?.to_vec();
        let public_template = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Encrypt(true),
            Attribute::ModulusBits(SEAL_KEY_BITS.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let private_template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(true),
            Attribute::Label(label),
            Attribute::Id(id.clone()),
        ];
        // A decrypt-only key if the token allows it. tpm2-pkcs11 1.9 makes
        // every RSA key sign-and-decrypt in the TPM and refuses a template
        // that says otherwise (CKR_GENERAL_ERROR, "attr mismatch"): there
        // take its defaults rather than have no sealing at all.
        let (public, _private) = self
            .generate_pair(
                session,
                &Mechanism::RsaPkcsKeyPairGen,
                (&public_template, &private_template),
                (
                    &[Attribute::Verify(false), Attribute::Wrap(false)],
                    &[Attribute::Sign(false), Attribute::Unwrap(false)],
                ),
                (&[], &[]),
            )
            .map_err(|e| self.ck_error("generate", "the sealing key", e))?;
        tracing::info!(token = %self.token.label, "created the PKCS#11 sealing key");
        Ok((id, public))
    }

    /// Generates a key pair from the base templates plus the `strict`
    /// extras (attributes that rule out every use but the intended one),
    /// or the `relaxed` extras if the token refuses those: tokens differ in
    /// which usage restrictions they allow, and we want the strictest each
    /// one takes. A refusal is remembered, so a token is asked once.
    fn generate_pair(
        &self,
        session: &Session,
        mechanism: &Mechanism<'_>,
        (public, private): (&[Attribute], &[Attribute]),
        strict: (&[Attribute], &[Attribute]),
        relaxed: (&[Attribute], &[Attribute]),
    ) -> std::result::Result<(ObjectHandle, ObjectHandle), CkError> {
        let with = |extra: (&[Attribute], &[Attribute])| {
            session.generate_key_pair(
                mechanism,
                &[public, extra.0].concat(),
                &[private, extra.1].concat(),
            )
        };
        if self.strict_templates.load(Ordering::Relaxed) {
            match with(strict) {
                // What tokens say about attributes they will not set; not
                // about curves or mechanisms, which no template fixes.
                Err(CkError::Pkcs11(
                    rv @ (RvError::TemplateInconsistent
                    | RvError::AttributeValueInvalid
                    | RvError::AttributeTypeInvalid
                    | RvError::AttributeReadOnly
                    | RvError::GeneralError
                    | RvError::FunctionFailed),
                    _,
                )) => {
                    tracing::info!(
                        token = %self.token.label,
                        refusal = %rv,
                        "token refused a usage-restricted key template; using its defaults"
                    );
                    self.strict_templates.store(false, Ordering::Relaxed);
                }
                done => return done,
            }
        }
        with(relaxed)
    }

    /// Errors that mean the token or session went away, not that it
    /// disliked what we asked.
    fn token_gone(rv: RvError) -> bool {
        matches!(
            rv,
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
        )
    }

    fn oaep(hash: OaepHash) -> Mechanism<'static> {
        let (hash, mgf) = match hash {
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }
}

/// The (generate, sign) mechanisms of an algorithm.
fn mechanisms_for(algorithm: Algorithm) -> Option<(MechanismType, MechanismType)> {
    match algorithm {
        Algorithm::EcdsaP256Sha256 => Some((MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA)),
        Algorithm::Ed25519 => Some((
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            MechanismType::EDDSA,
        )),
        _ => None,
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn info(&self) -> BackendInfo {
        let token = format!(
            "PKCS#11 token {:?} ({} {})",
            self.token.label,
            self.token.manufacturer,
            self.token
                .model
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
        if self.token.is_software() {
            BackendInfo {
                backend: BACKEND,
                description: format!(
                    "{token}: software token, class 1 only (keys are files the token encrypts)"
                ),
                hardware_backed: false,
                class: CapabilityClass::Basic,
            }
        } else {
            BackendInfo {
                backend: BACKEND,
                description: format!("{token}: keys generated in the token and never extractable"),
                hardware_backed: true,
                class: CapabilityClass::Enhanced,
            }
        }
    }

    fn public_key(&self, label: &KeyLabel) -> Result<PublicKey> {
        let session = self.session()?;
        let (_, algorithm, id) = self.private_key(&session, label)?;
        self.public_of(&session, label, &id, algorithm)
    }

    fn sign(&self, label: &KeyLabel, message: &[u8]) -> Result<Signature> {
        let session = self.session()?;
        let (handle, algorithm, _) = self.private_key(&session, label)?;
        let subject = format!("with key {label:?}");
        match algorithm {
            Algorithm::Ed25519 => {
                let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
                let signature = session
                    .sign(&mechanism, handle, message)
                    .map_err(|e| self.ck_error("sign", &subject, e))?;
                if signature.len() != 64 {
                    return Err(Error::Backend {
                        backend: BACKEND,
                        operation: "sign",
                        detail: format!(
                            "{} returned a {}-byte Ed25519 signature for key {label:?}",
                            self.token_description(),
                            signature.len()
                        ),
                    });
                }
                Ok(Signature(signature))
            }
            _ => {
                let hash = digest::digest(&digest::SHA256, message);
                let raw = session
                    .sign(&Mechanism::Ecdsa, handle, hash.as_ref())
                    .map_err(|e| self.ck_error("sign", &subject, e))?;
                encoding::ecdsa_p256_der_from_raw(&raw)
                    .map(Signature)
                    .map_err(|e| Error::Backend {
                        backend: BACKEND,
                        operation: "sign",
                        detail: format!("{} for key {label:?}: {e}", self.token_description()),
                    })
            }
        }
    }

    fn seal(&self, secret: &[u8]) -> Result<SealedSecret> {
        if secret.len() > SealedSecret::MAX_PLAINTEXT {
            return Err(Error::InvalidInput {
                what: "secret to seal",
                reason: format!(
                    "{} bytes is more than the {} a sealed secret holds",
                    secret.len(),
                    SealedSecret::MAX_PLAINTEXT
                ),
            });
        }
        let session = self.session()?;
        let (key_id, public) = self.seal_key(&session)?;
        let data_key = sealed::new_data_key()?;
        let mut hash = if self.oaep_sha1_only.load(Ordering::Relaxed) {
            OaepHash::Sha1
        } else {
            OaepHash::Sha256
        };
        let wrapped = loop {
            match session.encrypt(&Self::oaep(hash), public, &data_key[..]) {
                Ok(wrapped) => break wrapped,
                // SoftHSM 2.6 does OAEP over SHA-1 only.
                Err(CkError::Pkcs11(RvError::ArgumentsBad | RvError::MechanismParamInvalid, _))
                    if hash == OaepHash::Sha256 =>
                {
                    tracing::debug!(token = %self.token.label, "token refused RSA-OAEP over SHA-256; using SHA-1");
                    self.oaep_sha1_only.store(true, Ordering::Relaxed);
                    hash = OaepHash::Sha1;
                }
                Err(e) => {
                    return Err(self.ck_error("wrap a data key with", "the sealing key", e));
                }
            }
        };
        sealed::seal(hash, &key_id, &wrapped, &data_key[..], secret)
    }

    fn unseal(&self, sealed: &SealedSecret) -> Result<Zeroizing<Vec<u8>>> {
        let parsed = sealed::parse(&sealed.0)?;
        let session = self.session()?;
        let private = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Label(SEAL_KEY_LABEL.as_bytes().to_vec()),
                Attribute::Id(parsed.key_id.to_vec()),
            ])
            .map_err(|e| self.ck_error("look up", "the sealing key", e))?
            .into_iter()
            .next()
            .ok_or_else(|| Error::UnsealFailed {
                backend: BACKEND,
                reason: format!(
                    "the sealing key it names is not on {} (sealed by another token, or the key was deleted)",
                    self.token_description()
                ),
            })?;
        let data_key = match session.decrypt(&Self::oaep(parsed.hash), private, parsed.wrapped) {
            Ok(key) => Zeroizing::new(key),
            Err(e @ CkError::Pkcs11(rv, _)) if Self::token_gone(rv) => {
                return Err(self.ck_error("unwrap the data key with", "the sealing key", e));
            }
            // Whatever the token says about a bad wrapped key, we say the
            // same as for a bad tag: no padding oracle.
            Err(_) => Zeroizing::new(Vec::new()),
        };
        sealed::open(&parsed, &data_key)
    }
}

impl KeyAdmin for Pkcs11KeyStore {
    fn generate(&self, label: &KeyLabel, algorithm: Algorithm) -> Result<PublicKey> {
        let unsupported = || Error::UnsupportedAlgorithm {
            backend: BACKEND,
            algorithm: format!("{algorithm} on {}", self.token_description()),
        };
        let (params, mechanism) = match algorithm {
            Algorithm::EcdsaP256Sha256 => (ec::P256_PARAMS, Mechanism::EccKeyPairGen),
            Algorithm::Ed25519 => (ec::ED25519_PARAMS, Mechanism::EccEdwardsKeyPairGen),
            _ => return Err(unsupported()),
        };
        if !self.supports(algorithm) {
            return Err(unsupported());
        }
        let session = self.session()?;
        let label_bytes = label.as_str().as_bytes().to_vec();
        let taken = session
            .find_objects(&[Attribute::Label(label_bytes.clone())])
            .map_err(|e| self.ck_error("look up", &format!("label {label:?}"), e))?;
        if !taken.is_empty() {
            return Err(Error::KeyExists {
                backend: BACKEND,
                label: label.to_string(),
            });
        }
        let id = sealed::new_key_id()?.to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
            Attribute::Label(label_bytes.clone()),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label_bytes),
            Attribute::Id(id.clone()),
        ];
        // Sign-only where the token allows it: SoftHSM2 defaults EC private
        // keys to decrypt and unwrap too; tpm2-pkcs11 1.9 insists on
        // CKA_DECRYPT (inert: PKCS#11 has no EC decryption mechanism) but
        // accepts CKA_DERIVE false, which rules out ECDH with the key.
        let (public, private) = self
            .generate_pair(
                &session,
                &mechanism,
                (&public_template, &private_template),
                (
                    &[
                        Attribute::Encrypt(false),
                        Attribute::Wrap(false),
                        Attribute::Derive(false),
                    ],
                    &[
                        Attribute::Decrypt(false),
                        Attribute::Unwrap(false),
                        Attribute::Derive(false),
                    ],
                ),
                (&[Attribute::Derive(false)], &[Attribute::Derive(false)]),
            )
            .map_err(|e| match e {
                CkError::Pkcs11(
                    RvError::MechanismInvalid
                    | RvError::CurveNotSupported
                    | RvError::DomainParamsInvalid
                    | RvError::MechanismParamInvalid,
                    _,
                ) => unsupported(),
                e => self.ck_error("generate", &format!("key {label:?}"), e),
            })?;
        let checked = self
            .read_public(&session, public, label, algorithm)
            .and_then(|key| {
                // PKCS#11 does not keep labels unique: if a racing process
                // generated the same label, the smaller CKA_ID keeps it.
                let rivals = self.private_keys(&session, label)?;
                if rivals.iter().any(|(_, _, other)| *other < id) {
                    return Err(Error::KeyExists {
                        backend: BACKEND,
                        label: label.to_string(),
                    });
                }
                Ok(key)
            });
        if checked.is_err() {
            self.destroy(&session, &[private, public]);
        } else {
            tracing::info!(token = %self.token.label, %label, %algorithm, "generated key in PKCS#11 token");
        }
        checked
    }

    fn delete(&self, label: &KeyLabel) -> Result<()> {
        let session = self.session()?;
        let privates = self.private_keys(&session, label)?;
        let mut publics = Vec::new();
        for handle in session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(label.as_str().as_bytes().to_vec()),
            ])
            .map_err(|e| self.ck_error("look up", &format!("key {label:?}"), e))?
        {
            if self.key_kind(&session, handle, label.as_str())?.is_some() {
                publics.push(handle);
            }
        }
        if privates.is_empty() && publics.is_empty() {
            return Err(Self::not_found(label));
        }
        // Private halves first: a half-deleted pair must not leave a
        // usable private key behind.
        for handle in privates.iter().map(|(h, _, _)| *h).chain(publics) {
            session
                .destroy_object(handle)
                .map_err(|e| self.ck_error("delete", &format!("key {label:?}"), e))?;
        }
        tracing::info!(token = %self.token.label, %label, "deleted key from PKCS#11 token");
        Ok(())
    }

    fn list(&self) -> Result<Vec<KeyInfo>> {
        let session = self.session()?;
        let handles = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map_err(|e| self.ck_error("list", "keys", e))?;
        let mut out = Vec::new();
        for handle in handles {
            let label = session
                .get_attributes(handle, &[AttributeType::Label])
                .map_err(|e| self.ck_error("read the label of", "a key", e))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Label(l) => String::from_utf8(l).ok(),
                    _ => None,
                })
                .and_then(|l| l.parse::<KeyLabel>().ok());
            // Objects without a valid key label are not ours.
            let Some(label) = label else { continue };
            let Some((algorithm, id)) = self.key_kind(&session, handle, label.as_str())? else {
                continue;
            };
            match self.public_of(&session, &label, &id, algorithm) {
                Ok(public_key) => out.push(KeyInfo { label, public_key }),
                Err(e) => {
                    tracing::warn!(token = %self.token.label, %label, error = %e, "skipping a key whose public half cannot be read");
                }
            }
        }
        out.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(out)
    }
}
