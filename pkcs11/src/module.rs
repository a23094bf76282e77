//! PKCS#11 modules: loaded once per process, initialised again on demand, and the PINs
//! their tokens refused.
//!
//! Some modules only see a token that came back (re-inserted, restarted, reachable
//! again) after `C_Finalize` and `C_Initialize`: SoftHSM2 reads its token store only
//! when initialised, and several network HSM clients need the same after a partition.
//! [`Module::reset`] gives the current initialisation up (one at least [`RESET_AGE`]
//! old, doubled at each reset up to 5 minutes); it is finalised when its last session
//! closes (the binding calls `C_Finalize` when its last handle goes), and the next
//! [`Module::context`] initialises the module afresh. Until `C_Finalize` has returned no
//! new session is opened: two initialisations never overlap.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error, RvError};

use crate::Pkcs11Error;

/// One initialisation of a module. Every session is opened from one, and holds it (with
/// [`Context`] dropped after the session) so that it is finalised only when unused.
#[derive(Debug)]
pub(crate) struct Context {
    /// `None` only while being dropped.
    pkcs11: Option<Pkcs11>,
    pub(crate) epoch: u64,
    created: Instant,
    /// Set once `C_Finalize` has returned (the binding finalises when its last handle,
    /// this one, goes): a new initialisation may start.
    finalised: Arc<AtomicBool>,
}

impl Context {
    pub(crate) fn pkcs11(&self) -> &Pkcs11 {
        // Only `drop` takes it.
        self.pkcs11
            .as_ref()
            .unwrap_or_else(|| unreachable!("a context is used while it is dropped"))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        drop(self.pkcs11.take());
        self.finalised.store(true, Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct State {
    current: Option<Arc<Context>>,
    /// Whether the initialisation given up by the last reset is finalised.
    retired: Option<Arc<AtomicBool>>,
    epoch: u64,
    /// Resets so far: each doubles the age an initialisation must reach before the next
    /// (a token that stays away must not have the module finalised every few seconds).
    resets: u32,
}

/// A PKCS#11 library (see the module documentation).
#[derive(Debug)]
pub struct Module {
    path: PathBuf,
    state: Mutex<State>,
    /// The current initialisation's epoch (0: none), read without the state's lock.
    epoch: AtomicU64,
    /// (token, SHA-256 of a PIN) its token refused: never presented again (a token
    /// locks the PIN after a few failures), whatever reloads happen, until the PIN
    /// file says something else.
    refused: Mutex<HashSet<(String, [u8; 32])>>,
    /// One `C_Login` at a time: after a token came back, every waiting operation would
    /// otherwise present the PIN at once.
    login: Mutex<()>,
}

/// An initialisation younger than this is never given up (doubled at each reset, up to
/// [`MAX_RESET_AGE`]).
pub(crate) const RESET_AGE: Duration = Duration::from_secs(10);
const MAX_RESET_AGE: Duration = Duration::from_secs(300);

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
        epoch: AtomicU64::new(0),
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
        let busy = || Pkcs11Error::Unavailable {
            what: format!("module {}", self.path.display()),
            reason:
                "being initialised again: sessions of the previous initialisation are still in use"
                    .into(),
        };
        if state
            .retired
            .as_ref()
            .is_some_and(|done| !done.load(Ordering::Acquire))
        {
            return Err(busy());
        }
        let err = |reason: String| Pkcs11Error::Module {
            module: self.path.clone(),
            reason,
        };
        let pkcs11 = Pkcs11::new(&self.path)
            .map_err(|e| err(format!("not a loadable PKCS#11 library: {e}")))?;
        match pkcs11.initialize(CInitializeArgs::OsThreads) {
            Ok(()) => {}
            // Another part of the process initialised it first: shared. After a reset,
            // the previous initialisation is not finalised: never two at once.
            Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) if state.epoch == 0 => {}
            Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => return Err(busy()),
            Err(e) => return Err(err(format!("C_Initialize failed: {e}"))),
        }
        state.epoch += 1;
        let context = Arc::new(Context {
            pkcs11: Some(pkcs11),
            epoch: state.epoch,
            created: Instant::now(),
            finalised: Arc::new(AtomicBool::new(false)),
        });
        state.current = Some(Arc::clone(&context));
        state.retired = None;
        self.epoch.store(state.epoch, Ordering::Release);
        Ok(context)
    }

    /// The epoch of the current initialisation (0: none now).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Gives initialisation `epoch` up when it is still the current one and old enough
    /// (see [`RESET_AGE`]): see the module documentation.
    pub(crate) fn reset(&self, epoch: u64) {
        let mut state = lock(&self.state);
        let age = RESET_AGE
            .saturating_mul(1 << state.resets.min(5))
            .min(MAX_RESET_AGE);
        if let Some(current) = state
            .current
            .take_if(|c| c.epoch == epoch && c.created.elapsed() >= age)
        {
            // A long-lived initialisation: this reset starts a new series.
            if current.created.elapsed() >= MAX_RESET_AGE * 2 {
                state.resets = 0;
            }
            state.resets += 1;
            state.retired = Some(Arc::clone(&current.finalised));
            self.epoch.store(0, Ordering::Release);
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
