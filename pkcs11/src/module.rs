//! PKCS#11 modules: loaded once per process, initialised again on demand, and the PINs
//! their tokens refused.
//!
//! Some modules only see a token that came back (re-inserted, restarted, reachable
//! again) after `C_Finalize` and `C_Initialize`: SoftHSM2 reads its token store only
//! when initialised, and several network HSM clients need the same after a partition.
//! [`Module::reset`] gives the current initialisation up; it is finalised when its last
//! session closes (the binding calls `C_Finalize` when its last handle goes), and the
//! next [`Module::context`] initialises the module afresh. Until then no new session is
//! opened: two initialisations never overlap.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error, RvError};

use crate::Pkcs11Error;

/// One initialisation of a module. Every session is opened from one, and holds it (with
/// [`Context`] dropped after the session) so that it is finalised only when unused.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) pkcs11: Pkcs11,
    pub(crate) epoch: u64,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Arc<Context>>,
    /// The initialisation given up by the last reset, until its last user drops it.
    retired: Weak<Context>,
    epoch: u64,
}

/// A PKCS#11 library (see the module documentation).
#[derive(Debug)]
pub struct Module {
    path: PathBuf,
    state: Mutex<State>,
    /// (token, SHA-256 of a PIN) its token refused: never presented again (a token
    /// locks the PIN after a few failures), whatever reloads happen, until the PIN
    /// file says something else.
    refused: Mutex<HashSet<(String, [u8; 32])>>,
    /// One `C_Login` at a time: after a token came back, every waiting operation would
    /// otherwise present the PIN at once.
    login: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The module at `path`, shared by every key of it in the process (the same library
/// under two paths, a symbolic link, is one module). Loaded and initialised now; an
/// error names the file and what is wrong with it.
pub fn module(path: &Path) -> Result<Arc<Module>, Pkcs11Error> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    let canonical = std::fs::canonicalize(path).map_err(|e| Pkcs11Error::Module {
        module: path.to_path_buf(),
        reason: format!("cannot read it: {e}"),
    })?;
    let mut modules = lock(MODULES.get_or_init(Default::default));
    if let Some(module) = modules.get(&canonical) {
        return Ok(Arc::clone(module));
    }
    let module = Arc::new(Module {
        path: canonical.clone(),
        state: Mutex::default(),
        refused: Mutex::default(),
        login: Mutex::default(),
    });
    module.context()?;
    modules.insert(canonical, Arc::clone(&module));
    Ok(module)
}

impl Module {
    /// The current initialisation, made now when there is none.
    pub(crate) fn context(&self) -> Result<Arc<Context>, Pkcs11Error> {
        let mut state = lock(&self.state);
        if let Some(current) = &state.current {
            return Ok(Arc::clone(current));
        }
        if state.retired.strong_count() > 0 {
            return Err(Pkcs11Error::Unavailable {
                what: format!("module {}", self.path.display()),
                reason: "being initialised again: sessions of the previous initialisation are still in use".into(),
            });
        }
        let err = |reason: String| Pkcs11Error::Module {
            module: self.path.clone(),
            reason,
        };
        let pkcs11 = Pkcs11::new(&self.path)
            .map_err(|e| err(format!("not a loadable PKCS#11 library: {e}")))?;
        match pkcs11.initialize(CInitializeArgs::OsThreads) {
            Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(err(format!("C_Initialize failed: {e}"))),
        }
        state.epoch += 1;
        let context = Arc::new(Context {
            pkcs11,
            epoch: state.epoch,
        });
        state.current = Some(Arc::clone(&context));
        Ok(context)
    }

    /// The epoch of the current initialisation (0: none now).
    pub(crate) fn epoch(&self) -> u64 {
        lock(&self.state).current.as_ref().map_or(0, |c| c.epoch)
    }

    /// Gives initialisation `epoch` up (nothing when it is no longer the current one):
    /// see the module documentation.
    pub(crate) fn reset(&self, epoch: u64) {
        let mut state = lock(&self.state);
        if let Some(current) = state.current.take_if(|c| c.epoch == epoch) {
            state.retired = Arc::downgrade(&current);
        }
    }

    /// Runs `login` (a `C_Login`) unless the token refused this PIN before; remembers a
    /// refusal. One at a time.
    pub(crate) fn login_once(
        &self,
        token: &str,
        pin: &[u8],
        login: impl FnOnce() -> cryptoki::error::Result<()>,
    ) -> Result<(), LoginError> {
        let _one = lock(&self.login);
        let key = (token.to_string(), sha256(pin));
        if lock(&self.refused).contains(&key) {
            return Err(LoginError::RefusedBefore);
        }
        match login() {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(Error::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                f,
            )) => {
                lock(&self.refused).insert(key);
                Err(LoginError::Failed(Error::Pkcs11(RvError::PinIncorrect, f)))
            }
            Err(e) => Err(LoginError::Failed(e)),
        }
    }
}

/// Why a login did not happen.
pub(crate) enum LoginError {
    /// The token refused this PIN earlier: not presented again.
    RefusedBefore,
    Failed(Error),
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}
