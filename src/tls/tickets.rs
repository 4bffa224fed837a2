//! Session tickets of TLS listeners (RFC 8446 §4.6.1; RFC 5077 for TLS 1.2): with them a
//! client resumes a session without the server keeping any state, so instances that share the
//! ticket keys resume each other's sessions.
//!
//! Owns the compiled setting ([`SessionTickets`]), the ticket key file and the ticketer that
//! seals tickets with its keys ([`SharedTicketer`]), and the per-listener ticketer a reload
//! re-keys in place ([`TicketKeys`]). `table::compile` makes the ticketers (reading the key file,
//! so a bad one is a config problem), `edge::listen` installs them in the rustls config, and
//! `control::reload` swaps the new ones in.
//!
//! The key file holds one or more keys of [`KEY_LEN`] random bytes back to back, as
//! `openssl rand 80` writes them: the first [`NAME_LEN`] bytes of a key name it (the name travels
//! in the clear in every ticket, to pick the key that opens it), the rest is its secret. The
//! first key seals new tickets; every key opens them.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Prk, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use super::TlsError;

/// Bytes of one key in a key file.
pub const KEY_LEN: usize = 80;
/// Bytes at the start of a key that name it.
pub const NAME_LEN: usize = 16;
/// Keys a key file may hold: room for rotation, and a bound on what is read.
pub const MAX_KEYS: usize = 16;
/// How long a ticket sealed with a key file's key resumes a session: the same as the random
/// keys' (rustls makes a new key every 6 hours and keeps the previous one).
pub const TICKET_LIFETIME_SECS: u32 = 12 * 60 * 60;
/// How far in the future another instance's clock may have dated a ticket.
const CLOCK_SKEW_SECS: u64 = 5 * 60;

const SALT_LEN: usize = 16;
const ISSUED_LEN: usize = 8;
/// A sealed ticket: key name, salt and issue time (all authenticated), then the sealed session.
const HEADER_LEN: usize = NAME_LEN + SALT_LEN + ISSUED_LEN;
const AEAD_KEY_LEN: usize = 32;
/// Fixed salt of the extract step: the key's secret is the input key material.
const EXTRACT_SALT: &[u8] = b"meridian session ticket key";
/// Context of the expand step; the ticket's own salt follows it.
const EXPAND_LABEL: &[u8] = b"meridian session ticket v1";

/// How a TLS listener issues session tickets, compiled from `tls.session_tickets`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SessionTickets {
    /// No tickets: sessions resume from the process's own session cache only.
    Off,
    /// Keys made at random at start and at every reload (rustls also replaces them every six
    /// hours): sessions resume on this instance until the next reload.
    #[default]
    RandomKeys,
    /// Keys read from this file at start and at every reload: instances given the same file
    /// resume each other's sessions.
    KeyFile(PathBuf),
}

impl SessionTickets {
    /// The ticketer for this setting: fresh random keys, or the key file read now. `None` when
    /// tickets are off.
    pub fn ticketer(&self) -> Result<Option<Arc<dyn ProducesTickets>>, TlsError> {
        match self {
            Self::Off => Ok(None),
            Self::RandomKeys => rustls::crypto::aws_lc_rs::Ticketer::new()
                .map(Some)
                .map_err(TlsError::TicketKeys),
            Self::KeyFile(path) => {
                let ticketer: Arc<dyn ProducesTickets> = Arc::new(SharedTicketer::load(path)?);
                Ok(Some(ticketer))
            }
        }
    }
}

/// What is wrong with a ticket key file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileProblem {
    #[error("is not a regular file")]
    NotAFile,
    #[error("is empty: it must hold one or more {KEY_LEN}-byte keys (`openssl rand {KEY_LEN}`)")]
    Empty,
    #[error(
        "is larger than {} bytes: it may hold at most {MAX_KEYS} keys of {KEY_LEN} bytes",
        MAX_KEYS * KEY_LEN
    )]
    TooLarge,
    #[error(
        "is {0} bytes: it must hold whole {KEY_LEN}-byte keys (`openssl rand {KEY_LEN}`), \
         so its size is a multiple of {KEY_LEN}"
    )]
    Length(usize),
    #[error("key {0} is all zero bytes: write random bytes (`openssl rand {KEY_LEN}`)")]
    AllZero(usize),
    #[error("keys {0} and {1} have the same name (their first {NAME_LEN} bytes)")]
    DuplicateName(usize, usize),
}

/// Parse a key file's bytes into its keys; keys are numbered from 1 in problems.
fn parse_keys(bytes: &[u8]) -> Result<Vec<TicketKey>, KeyFileProblem> {
    if bytes.is_empty() {
        return Err(KeyFileProblem::Empty);
    }
    if bytes.len() > MAX_KEYS * KEY_LEN {
        return Err(KeyFileProblem::TooLarge);
    }
    if !bytes.len().is_multiple_of(KEY_LEN) {
        return Err(KeyFileProblem::Length(bytes.len()));
    }
    let mut keys: Vec<TicketKey> = Vec::new();
    for (i, key) in bytes.chunks_exact(KEY_LEN).enumerate() {
        if key.iter().all(|b| *b == 0) {
            return Err(KeyFileProblem::AllZero(i + 1));
        }
        let (name, secret) = key.split_at(NAME_LEN);
        let mut own = [0u8; NAME_LEN];
        own.copy_from_slice(name);
        if let Some(j) = keys.iter().position(|other| other.name == own) {
            return Err(KeyFileProblem::DuplicateName(j + 1, i + 1));
        }
        keys.push(TicketKey::new(own, secret));
    }
    Ok(keys)
}

/// Read a key file, refusing anything but a regular file and reading no more than a full file
/// can hold (a FIFO would block the reader; a device could be endless).
fn read_key_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let io = |source| TlsError::TicketKeyRead {
        path: path.to_path_buf(),
        source,
    };
    let format = |problem| TlsError::TicketKeyFormat {
        path: path.to_path_buf(),
        problem,
    };
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(format(KeyFileProblem::NotAFile));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take((MAX_KEYS * KEY_LEN + 1) as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

/// One key of a key file, ready to derive each ticket's AEAD key from.
struct TicketKey {
    name: [u8; NAME_LEN],
    prk: Prk,
}

/// Length of the expand step's output: an AES-256-GCM key and its nonce.
struct DerivedLen;

impl KeyType for DerivedLen {
    fn len(&self) -> usize {
        AEAD_KEY_LEN + NONCE_LEN
    }
}

impl TicketKey {
    fn new(name: [u8; NAME_LEN], secret: &[u8]) -> Self {
        Self {
            name,
            prk: Salt::new(HKDF_SHA256, EXTRACT_SALT).extract(secret),
        }
    }

    /// The AEAD key and nonce of the ticket with this salt. Each ticket has its own random
    /// salt, so its own key: no nonce is ever used twice under one key, however many tickets a
    /// fleet seals with one file over months (random nonces under one key would not promise
    /// that past about 2^32 tickets).
    fn derive(&self, salt: &[u8]) -> Option<(LessSafeKey, Nonce)> {
        let info = [EXPAND_LABEL, salt];
        let mut out = [0u8; AEAD_KEY_LEN + NONCE_LEN];
        self.prk
            .expand(&info, DerivedLen)
            .ok()?
            .fill(&mut out)
            .ok()?;
        let (key, nonce) = out.split_at(AEAD_KEY_LEN);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        Some((key, nonce))
    }
}

/// Tickets sealed with the keys of a key file (AES-256-GCM, a key derived per ticket with
/// HKDF-SHA256): the first key seals, every key opens.
pub struct SharedTicketer {
    keys: Vec<TicketKey>,
    random: SystemRandom,
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        f.debug_struct("SharedTicketer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl SharedTicketer {
    /// Read and check a key file.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let bytes = read_key_file(path)?;
        Self::from_bytes(&bytes).map_err(|problem| TlsError::TicketKeyFormat {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Keys from a key file's content.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyFileProblem> {
        Ok(Self {
            keys: parse_keys(bytes)?,
            random: SystemRandom::new(),
        })
    }

    fn seal(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let mut salt = [0u8; SALT_LEN];
        self.random.fill(&mut salt).ok()?;
        let (sealing, nonce) = key.derive(&salt)?;
        let mut ticket = Vec::with_capacity(HEADER_LEN + plain.len() + AES_256_GCM.tag_len());
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&salt);
        ticket.extend_from_slice(&now.to_be_bytes());
        ticket.extend_from_slice(plain);
        let (header, body) = ticket.split_at_mut_checked(HEADER_LEN)?;
        let tag = sealing
            .seal_in_place_separate_tag(nonce, Aad::from(&*header), body)
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// Open a ticket; `None` for anything not sealed by one of these keys within the lifetime.
    /// The ticket comes from the client: every length is checked, nothing indexes blindly.
    fn open(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        if ticket.len() < HEADER_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (header, sealed) = ticket.split_at_checked(HEADER_LEN)?;
        let (name, rest) = header.split_at_checked(NAME_LEN)?;
        let (salt, issued) = rest.split_at_checked(SALT_LEN)?;
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        if now.saturating_sub(issued) > u64::from(TICKET_LIFETIME_SECS)
            || issued > now.saturating_add(CLOCK_SKEW_SECS)
        {
            return None;
        }
        let key = self.keys.iter().find(|k| k.name[..] == *name)?;
        let (opening, nonce) = key.derive(salt)?;
        let mut body = sealed.to_vec();
        let plain_len = opening
            .open_in_place(nonce, Aad::from(header), &mut body)
            .ok()?
            .len();
        body.truncate(plain_len);
        Some(body)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain, unix_now())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(cipher, unix_now())
    }
}

/// A listener's ticketer as its rustls config holds it: a reload puts new keys inside, so the
/// listener is never rebuilt and new handshakes use the new keys (tickets sealed with the old
/// ones no longer resume).
#[derive(Debug)]
pub struct TicketKeys {
    current: ArcSwap<Arc<dyn ProducesTickets>>,
}

impl TicketKeys {
    pub fn new(ticketer: Arc<dyn ProducesTickets>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(ticketer),
        })
    }

    /// New handshakes seal and open tickets with these from now on.
    pub fn replace(&self, ticketer: Arc<dyn ProducesTickets>) {
        self.current.store(Arc::new(ticketer));
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        self.current.load().enabled()
    }

    fn lifetime(&self) -> u32 {
        self.current.load().lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.current.load().encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.current.load().decrypt(cipher)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn key(byte: u8) -> Vec<u8> {
        let mut key = vec![byte; KEY_LEN];
        // A distinct name per key.
        key[0] = byte;
        key[1] = byte.wrapping_add(1);
        key
    }

    fn ticketer(keys: &[Vec<u8>]) -> SharedTicketer {
        SharedTicketer::from_bytes(&keys.concat()).unwrap()
    }

    #[test]
    fn key_files_are_checked() {
        let cases: &[(Vec<u8>, Result<usize, KeyFileProblem>)] = &[
            (key(1), Ok(1)),
            ([key(1), key(2), key(3)].concat(), Ok(3)),
            (
                vec![7; MAX_KEYS * KEY_LEN],
                Err(KeyFileProblem::DuplicateName(1, 2)),
            ),
            (Vec::new(), Err(KeyFileProblem::Empty)),
            (vec![1; 48], Err(KeyFileProblem::Length(48))),
            (vec![1; KEY_LEN + 1], Err(KeyFileProblem::Length(81))),
            (
                vec![1; MAX_KEYS * KEY_LEN + 1],
                Err(KeyFileProblem::TooLarge),
            ),
            (
                [key(1), vec![0; KEY_LEN]].concat(),
                Err(KeyFileProblem::AllZero(2)),
            ),
            (
                [key(1), key(2), key(1)].concat(),
                Err(KeyFileProblem::DuplicateName(1, 3)),
            ),
        ];
        for (bytes, want) in cases {
            let got = parse_keys(bytes).map(|keys| keys.len());
            assert_eq!(&got, want, "{} bytes", bytes.len());
        }
        let sixteen: Vec<u8> = (1..=MAX_KEYS as u8).flat_map(key).collect();
        assert_eq!(parse_keys(&sixteen).unwrap().len(), MAX_KEYS);
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let plain = b"session state".to_vec();
        let old = ticketer(&[key(1)]);
        let rotated = ticketer(&[key(2), key(1)]);
        let other = ticketer(&[key(3)]);

        let sealed = old.seal(&plain, NOW).unwrap();
        assert_eq!(sealed.len(), HEADER_LEN + plain.len() + 16);
        assert!(
            !sealed.windows(plain.len()).any(|w| w == plain),
            "sealed, not copied"
        );
        assert_eq!(old.open(&sealed, NOW).unwrap(), plain);
        assert_eq!(
            rotated.open(&sealed, NOW).unwrap(),
            plain,
            "an older key still opens"
        );
        assert_eq!(
            other.open(&sealed, NOW),
            None,
            "another file's key does not"
        );

        let resealed = rotated.seal(&plain, NOW).unwrap();
        assert_eq!(
            &resealed[..NAME_LEN],
            &key(2)[..NAME_LEN],
            "the first key seals"
        );
        assert_eq!(old.open(&resealed, NOW), None);

        // Each ticket has its own salt, so its own key and nonce.
        assert_ne!(old.seal(&plain, NOW).unwrap(), sealed);
    }

    #[test]
    fn tickets_expire_and_tampering_is_refused() {
        let t = ticketer(&[key(1)]);
        let sealed = t.seal(b"state", NOW).unwrap();
        let life = u64::from(TICKET_LIFETIME_SECS);
        assert!(t.open(&sealed, NOW + life).is_some());
        assert_eq!(t.open(&sealed, NOW + life + 1), None, "expired");
        assert!(
            t.open(&sealed, NOW - CLOCK_SKEW_SECS).is_some(),
            "a clock a little behind"
        );
        assert_eq!(
            t.open(&sealed, NOW - CLOCK_SKEW_SECS - 1),
            None,
            "dated in the future"
        );
        // Any flipped bit (name, salt, issue time, body or tag) fails.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(t.open(&bad, NOW), None, "bit flipped at byte {i}");
        }
    }

    #[test]
    fn hostile_tickets_are_refused_without_panic() {
        let t = ticketer(&[key(1)]);
        let sealed = t.seal(b"state", NOW).unwrap();
        for len in 0..sealed.len() {
            assert_eq!(t.open(&sealed[..len], NOW), None, "cut to {len}");
        }
        let mut noise = vec![0u8; 70_000];
        let random = SystemRandom::new();
        for len in [0, 1, 39, 40, 55, 56, 57, 200, 65_535, 70_000] {
            random.fill(&mut noise[..len]).unwrap();
            assert_eq!(t.open(&noise[..len], NOW), None, "{len} random bytes");
        }
        // The right name with a forged body.
        let mut forged = sealed[..HEADER_LEN].to_vec();
        forged.extend_from_slice(&[0u8; 64]);
        assert_eq!(t.open(&forged, NOW), None);
    }

    #[test]
    fn ticket_keys_are_replaced_in_place() {
        let keys = TicketKeys::new(Arc::new(ticketer(&[key(1)])));
        let sealed = keys.encrypt(b"state").unwrap();
        assert_eq!(keys.decrypt(&sealed).unwrap(), b"state");
        keys.replace(Arc::new(ticketer(&[key(2)])));
        assert_eq!(keys.decrypt(&sealed), None, "the old key is gone");
        assert!(keys.enabled());
        assert_eq!(keys.lifetime(), TICKET_LIFETIME_SECS);
    }
}
