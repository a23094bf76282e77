//! Against SoftHSM2 (Debian `softhsm2`), a token store of the test's own. SoftHSM reads
//! its store from the environment of the process that loads it, once: the test sets the
//! store up, then runs itself again in a child process that sees it.

use std::sync::Arc;
use std::time::Duration;

use passerelle_certs_test::softhsm::{self, MODULE, SoftHsm, USER_PIN};
use passerelle_pkcs11::{
    KeySelector, KeySpec, Pin, Pkcs11Error, SignMechanism, TokenKey, TokenSelector,
    generate_rsa_key,
};

const TOKEN: &str = "pkcs11-crate";
/// Set in the child: the store's folder, ready.
const CHILD: &str = "PASSERELLE_PKCS11_TEST_STORE";

fn spec(label: &str, pin: &str, sessions: usize) -> KeySpec {
    KeySpec {
        module: MODULE.into(),
        token: TokenSelector::Label(TOKEN.into()),
        key: KeySelector::Label(label.into()),
        pin: Pin::new(pin.into()),
        sessions,
    }
}

#[test]
fn a_token_key_signs_concurrently_goes_away_and_comes_back() {
    let Some(store) = std::env::var_os(CHILD) else {
        assert!(
            softhsm::available(),
            "SoftHSM2 missing: run scripts/install-deps.sh"
        );
        let hsm = SoftHsm::new();
        hsm.init_token(TOKEN);
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--exact",
                "a_token_key_signs_concurrently_goes_away_and_comes_back",
                "--nocapture",
            ])
            .envs(hsm.env())
            .env(CHILD, &hsm.dir)
            .status()
            .expect("the test again, in a child");
        assert!(status.success(), "the child failed: see its output above");
        return;
    };
    let store = std::path::PathBuf::from(store);

    // A wrong PIN is named. (First: once a session of this process is logged in, the
    // token answers CKR_USER_ALREADY_LOGGED_IN to any PIN.)
    let wrong = TokenKey::open(spec("signer", "not-the-pin", 2));
    assert!(
        matches!(wrong, Err(Pkcs11Error::PinIncorrect { .. })),
        "{wrong:?}"
    );

    // Generated inside: sensitive, never extractable; a second key of that label refused.
    let key = Arc::new(
        generate_rsa_key(spec("signer", USER_PIN, 4), "signer", &[0x51], 2048)
            .expect("key pair generated in the token"),
    );
    let protection = key.protection().expect("attributes");
    assert!(protection.is_protected(), "{protection:?}");
    assert_eq!(key.public_key().expect("public half").bits(), 2048);
    let again = generate_rsa_key(spec("signer", USER_PIN, 1), "signer", &[0x52], 2048);
    assert!(
        matches!(&again, Err(Pkcs11Error::Operation { reason, .. }) if reason.contains("already holds")),
        "{again:?}"
    );

    // 32 threads x 8 signatures through 4 sessions: every one made, never a fifth session.
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let key = Arc::clone(&key);
            std::thread::spawn(move || {
                (0..8)
                    .map(|j| {
                        let mechanism = if (i + j) % 2 == 0 {
                            SignMechanism::RsaPkcs1Sha256
                        } else {
                            SignMechanism::RsaPssSha256
                        };
                        let signature = key.sign(mechanism, format!("{i}/{j}").as_bytes())?;
                        assert!(key.open_sessions() <= 4);
                        Ok(signature.len())
                    })
                    .collect::<Result<Vec<usize>, Pkcs11Error>>()
            })
        })
        .collect();
    for thread in threads {
        let lengths = thread.join().expect("thread").expect("signatures");
        assert!(lengths.iter().all(|l| *l == 256), "{lengths:?}");
    }
    assert!(key.open_sessions() <= 4);

    // The token taken away: operations fail, the key says why; back: it signs again.
    let tokens = store.join("tokens");
    let away = store.join("tokens-away");
    std::fs::rename(&tokens, &away).expect("take the token away");
    let gone = key.sign(SignMechanism::RsaPkcs1Sha256, b"while away");
    assert!(
        matches!(&gone, Err(e) if e.is_transient()),
        "signed without its token: {gone:?}"
    );
    assert!(key.unavailable().is_some());
    eprintln!(
        "token away: {}",
        gone.err().map(|e| e.to_string()).unwrap_or_default()
    );
    std::fs::rename(&away, &tokens).expect("put the token back");
    let returned = std::time::Instant::now();
    // SoftHSM2 reads its store only when initialised: the key's module is initialised
    // again once the key has been unavailable for 10 s, and then finds the token.
    let mut back = key.probe();
    for _ in 0..60 {
        if back.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        back = key.probe();
    }
    back.expect("signs again once the token is back");
    eprintln!(
        "signing again {:.1} s after the token's return",
        returned.elapsed().as_secs_f64()
    );
    assert_eq!(key.unavailable(), None);

    // An unknown key and an unknown token are named.
    let missing = TokenKey::open(spec("no-such-key", USER_PIN, 1));
    assert!(
        matches!(
            &missing,
            Err(Pkcs11Error::KeyNotFound { several: false, .. })
        ),
        "{missing:?}"
    );
    let mut other = spec("signer", USER_PIN, 1);
    other.token = TokenSelector::Label("no-such-token".into());
    let message = TokenKey::open(other)
        .map(drop)
        .expect_err("no such token")
        .to_string();
    assert!(message.contains(&format!("{TOKEN:?}")), "{message}");
}
