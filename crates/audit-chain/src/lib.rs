//! The audit trail's proof of itself, without I/O: what a service computes as it appends an
//! event and what `cqrsctl audit verify` recomputes from what the service answers.
//!
//! # The rules
//!
//! - Each service's events form one chain, numbered 1, 2, 3… with no gap (the writer takes a
//!   transaction-scoped advisory lock to number them, so a rolled-back transaction leaves no
//!   hole).
//! - Event `n` stores `hash(n) = SHA-256(hash(n-1) ‖ canonical JSON of event n)`, where
//!   `hash(0)` is 32 zero bytes and the canonical form is RFC 8785's (keys sorted, no spaces,
//!   one spelling per value), so the same event always hashes the same whichever program
//!   rebuilds it. Editing an event breaks its own link; deleting or reordering events breaks
//!   the next link or leaves a gap in the numbers.
//! - Rewriting the whole tail consistently (or restoring an older backup) leaves a valid chain,
//!   so every N events or T minutes the service signs a [`Checkpoint`] (service, sequence,
//!   head hash, time) with an Ed25519 key that lives in its configuration, never in its
//!   database, and hands it to the other services, which keep it. A chain that disagrees with
//!   any checkpoint held anywhere, or ends before one, has been rewritten.
//! - Purging old events keeps the chain checkable: the purge leaves a signed checkpoint at the
//!   last purged event, which anchors the first kept one.
//! - Events written without a hash (before the chain existed, or by the previous release during
//!   a rolling upgrade) are numbered like the others, counted, and linked around: the next
//!   hashed event follows the last hashed one. Taking the hash off an event breaks the next
//!   link, so only events that never had one can be without.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signer, Verifier};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A link of the chain: SHA-256.
pub type Hash = [u8; 32];

/// The hash before the first event.
pub const GENESIS: Hash = [0; 32];

/// One event as it is hashed. Absent text is the empty string, so that a stored NULL and an
/// empty value cannot hash differently on two sides.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub sequence: i64,
    pub id: String,
    /// Stored to the microsecond (Postgres' precision); finer parts are not hashed.
    pub occurred_at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: String,
    pub actor_name: String,
    pub actor_organisation_id: String,
    pub actor_role: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub outcome: String,
    pub request_id: String,
    pub client_address: String,
    pub user_agent: String,
    pub details: Value,
    /// `{ field: { "before": …, "after": … } }` for the fields the event changed.
    pub changes: Value,
}

impl Record {
    /// The document that is hashed.
    pub fn document(&self) -> Value {
        json!({
            "sequence": self.sequence,
            "id": self.id,
            "occurred_at": self.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "actor": {
                "kind": self.actor_kind,
                "id": self.actor_id,
                "name": self.actor_name,
                "organisation_id": self.actor_organisation_id,
                "role": self.actor_role,
            },
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "client_address": self.client_address,
            "user_agent": self.user_agent,
            "details": self.details,
            "changes": self.changes,
        })
    }

    /// This event's link, following `previous`.
    pub fn hash(&self, previous: &Hash) -> Hash {
        link(previous, &canonical(&self.document()))
    }
}

/// An event as a service answers it (`cqrs.common.v1.AuditEvent`), rebuilt for hashing: the
/// verifier's side of what the service stored.
pub fn record_from_proto(
    e: &cqrs_proto::common::v1::AuditEvent,
) -> Result<(Record, Option<Hash>), String> {
    use cqrs_proto::common::v1::{ActorKind, AuditOutcome};
    let json = |field: &str, text: &str| -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| format!("{field}: {e}"))
    };
    let changes = e
        .changes
        .iter()
        .map(|c| {
            Ok((
                c.field.clone(),
                json!({
                    "before": json("before_json", &c.before_json)?,
                    "after": json("after_json", &c.after_json)?,
                }),
            ))
        })
        .collect::<Result<serde_json::Map<_, _>, String>>()?;
    let time = e.create_time.as_ref().ok_or("no create_time")?;
    let occurred_at = u32::try_from(time.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(time.seconds, nanos))
        .ok_or("bad create_time")?;
    let actor_kind = match ActorKind::try_from(e.actor_kind) {
        Ok(ActorKind::User) => "user",
        Ok(ActorKind::Service) => "service",
        Ok(ActorKind::Anonymous) => "anonymous",
        Ok(ActorKind::System) => "system",
        _ => "",
    };
    let outcome = match AuditOutcome::try_from(e.outcome) {
        Ok(AuditOutcome::Success) => "success",
        Ok(AuditOutcome::Failure) => "failure",
        Ok(AuditOutcome::Denied) => "denied",
        _ => "",
    };
    let record = Record {
        sequence: e.sequence,
        id: e.id.clone(),
        occurred_at,
        actor_kind: actor_kind.to_owned(),
        actor_id: e.actor_id.clone(),
        actor_name: e.actor_name.clone(),
        actor_organisation_id: e.actor_organisation_id.clone(),
        actor_role: e.actor_role.clone(),
        action: e.action.clone(),
        target_type: e.target_type.clone(),
        target_id: e.target_id.clone(),
        outcome: outcome.to_owned(),
        request_id: e.request_id.clone(),
        client_address: e.client_address.clone(),
        user_agent: e.user_agent.clone(),
        details: json("details_json", &e.details_json)?,
        changes: Value::Object(changes),
    };
    Ok((record, hash_from(&e.hash)))
}

/// A checkpoint as services send it.
pub fn checkpoint_to_proto(c: &Checkpoint) -> cqrs_proto::audit::v1::Checkpoint {
    cqrs_proto::audit::v1::Checkpoint {
        service: c.service.clone(),
        sequence: c.sequence,
        head_hash: c.head_hash.to_vec(),
        create_time: Some(prost_types::Timestamp {
            seconds: c.made_at.timestamp(),
            nanos: i32::try_from(c.made_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        key_id: c.key_id.clone(),
        signature: c.signature.to_vec(),
    }
}

/// A checkpoint as received; `None` when a field is malformed.
pub fn checkpoint_from_proto(c: &cqrs_proto::audit::v1::Checkpoint) -> Option<Checkpoint> {
    let time = c.create_time.as_ref()?;
    Some(Checkpoint {
        service: c.service.clone(),
        sequence: c.sequence,
        head_hash: hash_from(&c.head_hash)?,
        made_at: DateTime::from_timestamp(time.seconds, u32::try_from(time.nanos).ok()?)?,
        key_id: c.key_id.clone(),
        signature: c.signature.as_slice().try_into().ok()?,
    })
}

/// RFC 8785 bytes of a JSON value.
pub fn canonical(value: &Value) -> Vec<u8> {
    // Serialising an in-memory `Value` cannot fail (keys are strings; no foreign types).
    serde_json_canonicalizer::to_vec(value).unwrap_or_default()
}

fn link(previous: &Hash, canonical: &[u8]) -> Hash {
    let mut digest = Sha256::new();
    digest.update(previous);
    digest.update(canonical);
    digest.finalize().into()
}

/// Lower-case hex, as hashes are shown and sent.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A 32-byte hash from stored or sent bytes.
pub fn hash_from(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

/// What is wrong with a key or checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("must be `kid:base64url(32 bytes)`")]
    Format,
    #[error("the key id must be 1 to 64 letters, digits, '.', '_' or '-'")]
    KeyId,
    #[error("the key must be 32 bytes of base64url")]
    Key,
}

fn parse_key_text(text: &str) -> Result<(String, [u8; 32]), KeyError> {
    let (kid, b64) = text.trim().split_once(':').ok_or(KeyError::Format)?;
    let valid_kid = !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid_kid {
        return Err(KeyError::KeyId);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| KeyError::Key)?;
    let key = bytes.as_slice().try_into().map_err(|_| KeyError::Key)?;
    Ok((kid.to_owned(), key))
}

/// The private key a service signs its checkpoints with: `kid:base64url(32-byte seed)`, kept
/// apart from the token keys so that neither can stand in for the other. `Debug` shows the
/// key id only.
#[derive(Clone)]
pub struct CheckpointKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// A key from its environment form.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (kid, seed) = parse_key_text(text)?;
        Ok(CheckpointKey {
            kid,
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// A fresh random key (for tests and `make run`).
    pub fn generate(kid: &str) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        CheckpointKey {
            kid: kid.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The environment form of this key (for tools that make one).
    pub fn to_env_value(&self) -> String {
        format!(
            "{}:{}",
            self.kid,
            URL_SAFE_NO_PAD.encode(self.key.to_bytes())
        )
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// A checkpoint of `service`'s chain at `sequence`, whose hash is `head`.
    pub fn sign(
        &self,
        service: &str,
        sequence: i64,
        head: Hash,
        made_at: DateTime<Utc>,
    ) -> Checkpoint {
        let made_at = truncate_to_micros(made_at);
        let signature = self
            .key
            .sign(&checkpoint_message(service, sequence, &head, made_at))
            .to_bytes();
        Checkpoint {
            service: service.to_owned(),
            sequence,
            head_hash: head,
            made_at,
            key_id: self.kid.clone(),
            signature,
        }
    }
}

/// A checkpoint key's public half: `kid:base64url(32 bytes)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (kid, bytes) = parse_key_text(text)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Key)?;
        Ok(PublicKey { kid, key })
    }

    pub fn to_text(&self) -> String {
        format!(
            "{}:{}",
            self.kid,
            URL_SAFE_NO_PAD.encode(self.key.as_bytes())
        )
    }
}

/// Postgres keeps microseconds: anything finer would not survive a round trip.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn checkpoint_message(
    service: &str,
    sequence: i64,
    head: &Hash,
    made_at: DateTime<Utc>,
) -> Vec<u8> {
    canonical(&json!({
        "kind": "cqrs.audit.checkpoint.v1",
        "service": service,
        "sequence": sequence,
        "head_hash": hex(head),
        "made_at": made_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    }))
}

/// A signed statement that `service`'s chain had `head_hash` at `sequence`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub service: String,
    pub sequence: i64,
    pub head_hash: Hash,
    pub made_at: DateTime<Utc>,
    pub key_id: String,
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// Whether one of `keys` signed this checkpoint.
    pub fn verify(&self, keys: &[PublicKey]) -> bool {
        let message =
            checkpoint_message(&self.service, self.sequence, &self.head_hash, self.made_at);
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        keys.iter()
            .filter(|k| k.kid == self.key_id)
            .any(|k| k.key.verify(&message, &signature).is_ok())
    }
}

/// A checkpoint and who holds it: the service itself or another one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCheckpoint {
    pub holder: String,
    pub checkpoint: Checkpoint,
}

/// The first thing wrong with a chain, in sequence order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("event {expected} is missing (the next stored event is {found})")]
    Missing { expected: i64, found: i64 },
    #[error("event {sequence} does not match its hash: it was changed, moved or removed")]
    HashMismatch { sequence: i64 },
    #[error(
        "the checkpoint at event {sequence} held by {holder} does not match the chain: the \
         events up to it were rewritten"
    )]
    CheckpointMismatch { sequence: i64, holder: String },
    #[error(
        "the chain ends at event {head} but {holder} holds a checkpoint at event {sequence}: \
         events were removed or an older backup restored"
    )]
    CheckpointBeyondHead {
        head: i64,
        sequence: i64,
        holder: String,
    },
    #[error(
        "the checkpoint at event {sequence} held by {holder} is not signed by the service's key"
    )]
    BadSignature { sequence: i64, holder: String },
    #[error(
        "the first stored event is {first} but no signed checkpoint at event {anchor} anchors it"
    )]
    Unanchored { first: i64, anchor: i64 },
}

impl Break {
    /// The sequence number the break is reported at.
    pub fn sequence(&self) -> i64 {
        match self {
            Break::Missing { expected, .. } => *expected,
            Break::HashMismatch { sequence }
            | Break::CheckpointMismatch { sequence, .. }
            | Break::BadSignature { sequence, .. } => *sequence,
            Break::CheckpointBeyondHead { head, .. } => head + 1,
            Break::Unanchored { first, .. } => *first,
        }
    }
}

/// What a verified chain was found to hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events checked link by link.
    pub verified: u64,
    /// Events without a hash (see the module docs), counted only.
    pub unhashed: u64,
    /// The last event's number and hash (0 and [`GENESIS`] for an empty chain).
    pub head: i64,
    pub head_hash: Hash,
    /// Checkpoints matched against the chain, by holder.
    pub checkpoints: BTreeMap<String, u64>,
}

/// Checks one service's chain as its events arrive in sequence order, against every
/// checkpoint known for it (its own and those other services hold).
#[derive(Debug)]
pub struct ChainVerifier {
    keys: Vec<PublicKey>,
    /// Checkpoints by sequence, each with its holders.
    checkpoints: BTreeMap<i64, Vec<HeldCheckpoint>>,
    next: Option<i64>,
    previous: Hash,
    summary: Summary,
    /// Where verification starts (`--from`): earlier events are only linked, not reported.
    from: i64,
}

impl ChainVerifier {
    /// A verifier for a chain whose checkpoints are `checkpoints`, signed by one of `keys`.
    /// Events before `from` are still needed to link the first one reported on.
    pub fn new(keys: Vec<PublicKey>, checkpoints: Vec<HeldCheckpoint>, from: i64) -> Self {
        let mut by_sequence: BTreeMap<i64, Vec<HeldCheckpoint>> = BTreeMap::new();
        for held in checkpoints {
            by_sequence
                .entry(held.checkpoint.sequence)
                .or_default()
                .push(held);
        }
        ChainVerifier {
            keys,
            checkpoints: by_sequence,
            next: None,
            previous: GENESIS,
            summary: Summary::default(),
            from,
        }
    }

    /// The number of the first event to ask for: from a signed checkpoint at or before
    /// `from - 1` the chain can start there instead of at the beginning.
    pub fn start(&self) -> i64 {
        self.checkpoints
            .range(..self.from.max(1))
            .rev()
            .find(|(_, held)| held.iter().any(|h| h.checkpoint.verify(&self.keys)))
            .map_or(1, |(sequence, _)| sequence + 1)
    }

    /// The next event, with the hash stored for it (`None` for events from before the chain).
    pub fn push(&mut self, record: &Record, stored: Option<&Hash>) -> Result<(), Break> {
        let sequence = record.sequence;
        match self.next {
            None => self.begin(sequence)?,
            Some(expected) if expected != sequence => {
                return Err(Break::Missing {
                    expected,
                    found: sequence,
                });
            }
            Some(_) => {}
        }
        self.next = Some(sequence + 1);
        match stored {
            None => {
                self.summary.unhashed += 1;
                self.summary.head = sequence;
                return self.check_checkpoints(sequence);
            }
            Some(stored) => {
                let computed = record.hash(&self.previous);
                if &computed != stored {
                    return Err(Break::HashMismatch { sequence });
                }
                self.previous = computed;
            }
        }
        if sequence >= self.from {
            self.summary.verified += 1;
        }
        self.summary.head = sequence;
        self.summary.head_hash = self.previous;
        self.check_checkpoints(sequence)
    }

    /// The first event seen: the beginning of the chain, or one anchored by a signed
    /// checkpoint just before it.
    fn begin(&mut self, first: i64) -> Result<(), Break> {
        if first == 1 {
            return Ok(());
        }
        let anchor = first - 1;
        let hash = self.checkpoints.get(&anchor).and_then(|held| {
            held.iter()
                .find(|h| h.checkpoint.verify(&self.keys))
                .map(|h| h.checkpoint.head_hash)
        });
        match hash {
            Some(hash) => {
                self.previous = hash;
                self.check_checkpoints(anchor)
            }
            None => Err(Break::Unanchored { first, anchor }),
        }
    }

    fn check_checkpoints(&mut self, sequence: i64) -> Result<(), Break> {
        let Some(held) = self.checkpoints.get(&sequence) else {
            return Ok(());
        };
        for h in held {
            if !h.checkpoint.verify(&self.keys) {
                return Err(Break::BadSignature {
                    sequence,
                    holder: h.holder.clone(),
                });
            }
            if h.checkpoint.head_hash != self.previous {
                return Err(Break::CheckpointMismatch {
                    sequence,
                    holder: h.holder.clone(),
                });
            }
            *self
                .summary
                .checkpoints
                .entry(h.holder.clone())
                .or_default() += 1;
        }
        Ok(())
    }

    /// After the last event: no checkpoint may lie beyond it.
    pub fn finish(self) -> Result<Summary, Break> {
        let head = self.summary.head;
        if let Some((sequence, held)) = self.checkpoints.range(head + 1..).next() {
            let holder = held.first().map(|h| h.holder.clone()).unwrap_or_default();
            let signed = held.iter().any(|h| h.checkpoint.verify(&self.keys));
            return Err(if signed {
                Break::CheckpointBeyondHead {
                    head,
                    sequence: *sequence,
                    holder,
                }
            } else {
                Break::BadSignature {
                    sequence: *sequence,
                    holder,
                }
            });
        }
        Ok(self.summary)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap()
    }

    fn record(sequence: i64) -> Record {
        Record {
            sequence,
            id: format!("id-{sequence}"),
            occurred_at: DateTime::from_timestamp(1_700_000_000 + sequence, 1_234_567).unwrap(),
            actor_kind: "user".into(),
            actor_id: "a1".into(),
            actor_name: "Ann Smith".into(),
            actor_organisation_id: String::new(),
            actor_role: "SERVICE_DESK".into(),
            action: "DISABLE_ACCOUNT".into(),
            target_type: "account".into(),
            target_id: format!("t{sequence}"),
            outcome: "success".into(),
            request_id: "r".into(),
            client_address: "192.0.2.1".into(),
            user_agent: "test".into(),
            details: json!({ "reason": "left", "n": 3 }),
            changes: json!({ "status": { "before": "ACTIVE", "after": "DISABLED" } }),
        }
    }

    fn chain(n: i64) -> Vec<(Record, Hash)> {
        let mut previous = GENESIS;
        (1..=n)
            .map(|s| {
                let r = record(s);
                previous = r.hash(&previous);
                (r, previous)
            })
            .collect()
    }

    fn verify(
        events: &[(Record, Option<Hash>)],
        checkpoints: Vec<HeldCheckpoint>,
        key: &CheckpointKey,
    ) -> Result<Summary, Break> {
        let mut v = ChainVerifier::new(vec![key.public()], checkpoints, 1);
        for (r, h) in events {
            v.push(r, h.as_ref())?;
        }
        v.finish()
    }

    fn stored(c: &[(Record, Hash)]) -> Vec<(Record, Option<Hash>)> {
        c.iter().map(|(r, h)| (r.clone(), Some(*h))).collect()
    }

    fn held(holder: &str, checkpoint: Checkpoint) -> HeldCheckpoint {
        HeldCheckpoint {
            holder: holder.into(),
            checkpoint,
        }
    }

    #[test]
    fn canonical_form_is_rfc_8785() {
        let v = json!({ "b": 1, "a": [true, null, "é\u{1}"], "\u{FB33}": {}, "\u{1F600}": 2 });
        // Keys sort by UTF-16 code units: the emoji (surrogate 0xD83D) before U+FB33, which
        // UTF-8 byte order would get the other way round.
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            "{\"a\":[true,null,\"é\\u0001\"],\"b\":1,\"\u{1F600}\":2,\"\u{FB33}\":{}}"
        );
    }

    #[test]
    fn hashes_ignore_sub_microseconds_and_key_order() {
        let a = record(1);
        let mut b = a.clone();
        b.occurred_at = truncate_to_micros(a.occurred_at);
        assert_eq!(a.hash(&GENESIS), b.hash(&GENESIS));
        b.details = serde_json::from_str(r#"{"n":3,"reason":"left"}"#).unwrap();
        assert_eq!(a.hash(&GENESIS), b.hash(&GENESIS));
        b.actor_name = "Ann Smyth".into();
        assert_ne!(a.hash(&GENESIS), b.hash(&GENESIS));
        assert_ne!(a.hash(&GENESIS), a.hash(&[1; 32]));
    }

    #[test]
    fn an_intact_chain_verifies_with_its_checkpoints() {
        let key = CheckpointKey::generate("k1");
        let c = chain(5);
        let cps = vec![
            held("identity", key.sign("identity", 2, c[1].1, t0())),
            held("access", key.sign("identity", 5, c[4].1, t0())),
        ];
        let summary = verify(&stored(&c), cps, &key).unwrap();
        assert_eq!(summary.verified, 5);
        assert_eq!(summary.head, 5);
        assert_eq!(summary.head_hash, c[4].1);
        assert_eq!(summary.checkpoints.len(), 2);
    }

    #[test]
    fn edits_deletions_and_reorders_are_named() {
        let key = CheckpointKey::generate("k1");
        let c = chain(5);

        let mut edited = stored(&c);
        edited[2].0.details = json!({ "reason": "changed" });
        assert_eq!(
            verify(&edited, vec![], &key),
            Err(Break::HashMismatch { sequence: 3 })
        );

        let mut deleted = stored(&c);
        deleted.remove(1);
        assert_eq!(
            verify(&deleted, vec![], &key),
            Err(Break::Missing {
                expected: 2,
                found: 3
            })
        );

        // Two events swap places and numbers: the first moved one no longer links.
        let mut reordered = stored(&c);
        reordered.swap(1, 2);
        reordered[1].0.sequence = 2;
        reordered[2].0.sequence = 3;
        assert_eq!(
            verify(&reordered, vec![], &key),
            Err(Break::HashMismatch { sequence: 2 })
        );

        // A hash taken off: the next link no longer follows.
        let mut unhashed = stored(&c);
        unhashed[3].1 = None;
        assert_eq!(
            verify(&unhashed, vec![], &key),
            Err(Break::HashMismatch { sequence: 5 })
        );
    }

    #[test]
    fn a_rewritten_or_truncated_chain_is_caught_by_checkpoints() {
        let key = CheckpointKey::generate("k1");
        let c = chain(5);
        // The whole chain rebuilt consistently after event 2 was changed.
        let mut rebuilt = Vec::new();
        let mut previous = GENESIS;
        for (mut r, _) in c.clone() {
            if r.sequence == 2 {
                r.outcome = "failure".into();
            }
            previous = r.hash(&previous);
            rebuilt.push((r, Some(previous)));
        }
        let cp = held("directory", key.sign("identity", 3, c[2].1, t0()));
        assert_eq!(
            verify(&rebuilt, vec![cp.clone()], &key),
            Err(Break::CheckpointMismatch {
                sequence: 3,
                holder: "directory".into()
            })
        );
        // An older backup: the chain ends before a checkpoint another service holds.
        assert_eq!(
            verify(&stored(&c[..2]), vec![cp], &key),
            Err(Break::CheckpointBeyondHead {
                head: 2,
                sequence: 3,
                holder: "directory".into()
            })
        );
        // A checkpoint signed by some other key counts for nothing.
        let forged = held(
            "identity",
            CheckpointKey::generate("k1").sign("identity", 4, c[3].1, t0()),
        );
        assert_eq!(
            verify(&stored(&c), vec![forged], &key),
            Err(Break::BadSignature {
                sequence: 4,
                holder: "identity".into()
            })
        );
    }

    #[test]
    fn a_purged_chain_starts_at_its_anchor() {
        let key = CheckpointKey::generate("k1");
        let c = chain(5);
        let kept = stored(&c[2..]);
        assert_eq!(
            verify(&kept, vec![], &key),
            Err(Break::Unanchored {
                first: 3,
                anchor: 2
            })
        );
        let anchor = held("identity", key.sign("identity", 2, c[1].1, t0()));
        let summary = verify(&kept, vec![anchor.clone()], &key).unwrap();
        assert_eq!(summary.verified, 3);

        let v = ChainVerifier::new(vec![key.public()], vec![anchor], 4);
        assert_eq!(v.start(), 3);
    }

    #[test]
    fn events_without_a_hash_are_counted_and_linked_around() {
        let key = CheckpointKey::generate("k1");
        // Two from before the chain, then one written by the previous release mid-chain.
        let mut events: Vec<(Record, Option<Hash>)> = vec![(record(1), None), (record(2), None)];
        let mut previous = GENESIS;
        for s in 3..=6 {
            let r = record(s);
            if s == 4 {
                events.push((r, None));
                continue;
            }
            previous = r.hash(&previous);
            events.push((r, Some(previous)));
        }
        let summary = verify(&events, vec![], &key).unwrap();
        assert_eq!((summary.unhashed, summary.verified), (3, 3));
    }

    #[test]
    fn keys_round_trip_their_text_forms() {
        let key = CheckpointKey::generate("audit-1");
        assert_eq!(
            CheckpointKey::parse(&key.to_env_value()).unwrap().public(),
            key.public()
        );
        assert_eq!(
            PublicKey::parse(&key.public().to_text()).unwrap(),
            key.public()
        );
        assert_eq!(CheckpointKey::parse("nokid").unwrap_err(), KeyError::Format);
        assert_eq!(
            CheckpointKey::parse("bad kid:AAAA").unwrap_err(),
            KeyError::KeyId
        );
        assert_eq!(CheckpointKey::parse("k:AAAA").unwrap_err(), KeyError::Key);
        assert!(!format!("{key:?}").contains(&key.to_env_value()[8..]));
    }
}
