//! One loaded, initialised context per PKCS#11 module per process, and
//! the login bookkeeping PKCS#11 makes per-process too.
//!
//! `C_Initialize` may succeed once per process and `C_Finalize` ends every
//! session of every user of the module, so a module is loaded and
//! initialised on first use and then stays so for the life of the process;
//! every store on it shares the one context. Logins are per application
//! and token: a second store on a token someone in this process already
//! logged in to gets `CKR_USER_ALREADY_LOGGED_IN` without its PIN being
//! checked, so we remember a digest of the PIN that did log in and hold
//! the second store to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use aws_lc_rs::{constant_time, digest};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::types::RawAuthPin;
use keys::{Error, Result};

use crate::BACKEND;

struct Module {
    ctx: Pkcs11,
    /// SHA-256 of the PIN that logged in, per slot.
    logins: HashMap<u64, digest::Digest>,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Module>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The canonical path of a module file, or `Unavailable` naming the path.
fn canonical(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        return Err(Error::Unavailable {
            backend: BACKEND,
            detail: format!("PKCS#11 module {} does not exist", path.display()),
        });
    }
    path.canonicalize().map_err(|e| Error::Unavailable {
        backend: BACKEND,
        detail: format!("PKCS#11 module {}: {e}", path.display()),
    })
}

/// The process-wide context of the module at `path`, loading and
/// initialising it on first use, with the module's canonical path (the
/// key for [`login`]).
pub(crate) fn context(path: &Path) -> Result<(Pkcs11, PathBuf)> {
    let key = canonical(path)?;
    let mut modules = modules().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(module) = modules.get(&key) {
        return Ok((module.ctx.clone(), key));
    }
    let ctx = Pkcs11::new(&key).map_err(|e| Error::Unavailable {
        backend: BACKEND,
        detail: format!("cannot load PKCS#11 module {}: {e}", path.display()),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process initialised it: share their state.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Error::Unavailable {
                backend: BACKEND,
                detail: format!(
                    "PKCS#11 module {} failed to initialise: {e}",
                    path.display()
                ),
            });
        }
    }
    modules.insert(
        key.clone(),
        Module {
            ctx: ctx.clone(),
            logins: HashMap::new(),
        },
    );
    Ok((ctx, key))
}

/// What a login attempt came to, for the caller to phrase as an error.
pub(crate) enum LoginError {
    /// The token refused the PIN (or it is locked).
    Refused(&'static str),
    /// Another store in this process is logged in with a different PIN.
    DifferentPin,
    /// Anything else the module reported.
    Other(CkError),
}

/// Logs `session` in as the user with `pin`, under the registry lock so
/// that two stores opening at once agree on who logged in. `module` is
/// the canonical path [`context`] returned.
pub(crate) fn login(
    module: &Path,
    slot: u64,
    session: &Session,
    pin: &[u8],
) -> std::result::Result<(), LoginError> {
    let mut modules = modules().lock().unwrap_or_else(PoisonError::into_inner);
    let pin_digest = digest::digest(&digest::SHA256, pin);
    let raw = RawAuthPin::new(Box::new(pin.to_vec()));
    let result = session.login_with_raw(UserType::User, &raw);
    let logins = modules.get_mut(module).map(|m| &mut m.logins);
    match result {
        Ok(()) => {
            if let Some(logins) = logins {
                logins.insert(slot, pin_digest);
            }
            Ok(())
        }
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            // Someone in this process is logged in: accept only the PIN
            // that logged in. A login we did not record (another library
            // user in this process) cannot be checked and is accepted.
            match logins.and_then(|l| l.get(&slot)) {
                Some(known)
                    if constant_time::verify_slices_are_equal(
                        known.as_ref(),
                        pin_digest.as_ref(),
                    )
                    .is_err() =>
                {
                    Err(LoginError::DifferentPin)
                }
                _ => Ok(()),
            }
        }
        Err(e) => {
            let why = match &e {
                CkError::Pkcs11(rv, _) => refused(*rv),
                _ => None,
            };
            Err(why.map_or(LoginError::Other(e), LoginError::Refused))
        }
    }
}

fn refused(rv: RvError) -> Option<&'static str> {
    match rv {
        RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange => Some("PIN rejected"),
        RvError::PinLocked => Some("PIN locked"),
        RvError::PinExpired => Some("PIN expired"),
        RvError::UserPinNotInitialized => Some("the token's user PIN is not initialised"),
        _ => None,
    }
}
