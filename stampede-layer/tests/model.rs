//! A model check of the coordination protocol (issue #19): lock acquire and
//! release, lock-less tickets, the fence, fenced writes, purges, key expiry,
//! `FLUSHALL`, and arbitrary process pauses — explored exhaustively with
//! [stateright](https://docs.rs/stateright) for 2–3 gateways and a bounded
//! number of steps.
//!
//! Two protocols are modelled side by side:
//!
//! * **fenced** — today's, through the crate's own state machine
//!   ([`FenceRecord`], what the in-process store runs and the Redis scripts
//!   mirror in Lua);
//! * **legacy** — the protocol before it: one counter per key (`INCR`),
//!   kept as long as the entry or the lock, re-seeded from the stored entry's
//!   token, tombstones on delete, and lock-less writes that draw their token
//!   when they land.
//!
//! A pause is not an action of its own: any gateway may stay idle for any
//! number of steps while everything else happens, and any lease may lapse at
//! any step (a paused holder cannot renew; Redis may evict). The invariants
//! are stated over ghost state — the order in which things really happened —
//! never over the protocol's tokens:
//!
//! * `a write never lands after a later write or purge`: a fill's write is
//!   accepted only if no write of the same variant whose rebuild *started*
//!   later, and no purge that came later than its start, landed before it;
//! * `no stale version after a purge`: once a purge that followed an origin
//!   update to version `u` returned, no write of a version older than `u` lands.
//!
//! The legacy protocol breaks both (the cold-key pause of issue #19 among the
//! counterexamples); the fenced one holds them in every reachable state.
//!
//! Purge by tag (issue #24) adds a race with the tag's index: a tag purge
//! lists the tag's keys, then fences each listed key; a fill of a tagged
//! entry joins the index only when it has its answer, so a fill that asked
//! the origin before the purge may join after the listing. The model adds
//! the tag purge's two steps (begin: record and list; fence: the per-key
//! delete of a listed key) and the fill's index step (join the index, read
//! the tag's purge record), under one more invariant, `no tag purge undone
//! by a fill that asked the origin before it`. A single clock stands for the
//! gateways' clocks (the allowed skew is a margin on top; see
//! docs/LAYERS.md). Without the purge record the checker finds the race;
//! with it (and the purge id the fence notes in the key's record) it finds
//! none — and a fill that started after the purge fenced its key still
//! lands.

use stampede_layer::store::fence::{FenceRecord, FencingToken};
use stateright::{Checker, Model, Property};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Protocol {
    Legacy,
    Fenced,
}

/// The lease a fill holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lease {
    /// Fenced: a token (lock or ticket).
    Token(FencingToken),
    /// Legacy: the lock's token.
    Legacy(u64),
    /// Legacy: no lock (a waiter that gave up, single-flight only, …): the
    /// token is drawn when the write lands.
    LegacyUnlocked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Idle,
    /// Holds a lease, has not asked the origin yet.
    Leased,
    /// Read `version` from the origin; the write is pending.
    Fetched(u8),
    /// Tagged: joined the tag's index (and read its purge record); the
    /// write of `version` is pending.
    Indexed(u8),
    Done,
}

/// How purges by tag are fenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tags {
    /// No tags (the model of issue #19).
    Off,
    /// The per-key fence of the listed keys only.
    ListedOnly,
    /// The purge record read by the fill, and the purge id noted in the
    /// fenced key's record (today's).
    Recorded,
}

/// A tag purge's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TagPurge {
    Idle,
    /// Recorded (at `at`, id `id`, the origin at `version`) and listed;
    /// the listed key is not fenced yet.
    Listed {
        at: u8,
        id: u8,
        version: u8,
    },
    Done {
        at: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Fill {
    phase: Phase,
    lease: Option<Lease>,
    locked: bool,
    variant: u8,
    /// Ghost: when the rebuild started (took its lease).
    started: u8,
    /// When it asked the origin (its request time).
    fetched: u8,
    /// The tag purge record it read when it joined the index: (at, id).
    seen: Option<(u8, u8)>,
    /// Its request is older than the purge record's life (the record it
    /// would have to read lapsed): refused.
    too_old: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    fills: Vec<Fill>,
    /// Fills started so far (bounds the exploration).
    started: u8,
    origin_version: u8,
    updates: u8,
    purges: u8,
    flushes: u8,
    /// Ghost clock: bumped by every lease draw, origin request and purge.
    clock: u8,
    // --- purge by tag ---
    /// The key is in the tag's index.
    indexed: bool,
    /// The tag's purge record: (at, purge id).
    tag_record: Option<(u8, u8)>,
    /// The purge id and floor the last tag purge noted in the key's record
    /// (part of the record: gone with it).
    tag_note: Option<(u8, u64)>,
    tag_purge: TagPurge,
    tag_purges: u8,
    violation_tag: bool,
    // --- the store ---
    /// Entry per variant: (version, legacy token).
    entries: Vec<Option<(u8, u64)>>,
    /// Legacy: a tombstone's token (one per key).
    tombstone: Option<u64>,
    /// Legacy: the key's counter.
    counter: Option<u64>,
    /// Fenced: the key's record.
    record: Option<FenceRecord>,
    /// Epochs handed out so far (stand-ins for random epochs: never reused).
    epochs: u64,
    /// The fill holding the lock.
    lock: Option<usize>,
    // --- ghost history ---
    /// Per variant: the latest start time among landed writes.
    landed: Vec<Option<u8>>,
    /// The time of the latest purge.
    purged_at: Option<u8>,
    /// The origin version when the latest purge happened.
    purged_version: u8,
    violation_order: bool,
    violation_stale: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Action {
    /// Fill `i` starts holding the lock, for `variant`.
    StartLocked(usize, u8),
    /// Fill `i` starts without the lock (ticket / legacy token 0).
    StartUnlocked(usize, u8),
    /// Fill `i` asks the origin.
    Fetch(usize),
    /// Fill `i` writes what it fetched.
    Write(usize),
    /// Fill `i` gives up (its rebuild failed): releases its lock.
    Abandon(usize),
    /// The item is updated at the origin.
    Update,
    /// A purge of the key (after an update, or on its own).
    Purge,
    /// The lock lapses (its holder paused; eviction).
    LockExpires,
    /// The fence record lapses (fenced) / the counter expires (legacy: only
    /// once the entry and the lock are gone, as its PTTL follows them).
    FenceExpires,
    /// An entry expires (its TTL).
    EntryExpires(u8),
    /// The tombstone's hold ends (legacy).
    TombstoneExpires,
    /// `FLUSHALL` or a restart without persistence.
    Flush,
    /// Fill `i` (tagged) joins the tag's index and reads its purge record.
    Index(usize),
    /// A tag purge records itself and lists the tag's index.
    TagPurgeBegin,
    /// It fences (and deletes) the key it listed.
    TagPurgeFence,
    /// The tag's purge record lapses (its window).
    TagRecordExpires,
}

struct Protocols {
    protocol: Protocol,
    fills: usize,
    max_starts: u8,
    variants: u8,
    max_updates: u8,
    max_purges: u8,
    max_flushes: u8,
    /// Whether fills may start without the lock.
    unlocked: bool,
    tags: Tags,
}

impl Protocols {
    fn draw(&self, s: &mut State) -> FencingToken {
        if s.record.is_none() {
            s.epochs += 1;
            s.record = Some(FenceRecord::new(s.epochs));
        }
        s.record.as_mut().expect("just made").draw()
    }

    /// Legacy: the token the stored entry (or tombstone) carries.
    fn legacy_stored(s: &State) -> u64 {
        s.entries
            .iter()
            .flatten()
            .map(|(_, t)| *t)
            .chain(s.tombstone)
            .max()
            .unwrap_or(0)
    }

    /// Legacy `next_token`: INCR the counter, never below the entry's token + 1.
    fn legacy_next(s: &mut State) -> u64 {
        let stored = Self::legacy_stored(s);
        let mut tok = s.counter.unwrap_or(0) + 1;
        if tok <= stored {
            tok = stored + 1;
        }
        s.counter = Some(tok);
        tok
    }

    fn start(&self, s: &mut State, i: usize, variant: u8, locked: bool) {
        s.clock += 1;
        let lease = match (self.protocol, locked) {
            (Protocol::Fenced, _) => Lease::Token(self.draw(s)),
            (Protocol::Legacy, true) => Lease::Legacy(Self::legacy_next(s)),
            (Protocol::Legacy, false) => Lease::LegacyUnlocked,
        };
        if locked {
            s.lock = Some(i);
        }
        s.fills[i] = Fill {
            phase: Phase::Leased,
            lease: Some(lease),
            locked,
            variant,
            started: s.clock,
            fetched: 0,
            seen: None,
            too_old: false,
        };
        s.started += 1;
    }

    /// The store's verdict on fill `i`'s write, applied.
    fn write(&self, s: &mut State, i: usize, version: u8) -> bool {
        let fill = s.fills[i];
        let v = fill.variant as usize;
        match (self.protocol, fill.lease.expect("leased")) {
            (Protocol::Fenced, Lease::Token(token)) => {
                let variant = format!("{v}");
                let note = s.tag_note;
                let Some(record) = s.record.as_mut() else {
                    return false;
                };
                if record.check_write(token, Some(&variant)).is_err() {
                    return false;
                }
                if self.tags == Tags::Recorded {
                    // `tags::refused_by_purges` with one clock: refused when
                    // the purge it read came after its request, unless that
                    // very purge fenced the key before its lease was drawn.
                    let fenced_before = |(_, id): (u8, u8)| {
                        note.is_some_and(|(n, floor)| n == id && token.seq >= floor)
                    };
                    let refused = fill
                        .seen
                        .is_some_and(|seen| !fenced_before(seen) && seen.0 >= fill.fetched);
                    if refused || fill.too_old {
                        return false;
                    }
                }
                if record.write(token, Some(&variant)).is_err() {
                    return false;
                }
                s.entries[v] = Some((version, token.seq));
                true
            }
            (Protocol::Legacy, lease) => {
                let cur = Self::legacy_stored(s);
                let tok = match lease {
                    Lease::Legacy(t) => t,
                    _ => Self::legacy_next(s),
                };
                if tok < cur {
                    return false;
                }
                // One slot per key: the write replaces entry and tombstone.
                s.tombstone = None;
                for e in s.entries.iter_mut() {
                    *e = None;
                }
                s.entries[v] = Some((version, tok));
                true
            }
            (Protocol::Fenced, _) => unreachable!("fenced fills hold tokens"),
        }
    }

    fn purge(&self, s: &mut State) {
        match self.protocol {
            Protocol::Fenced => {
                for e in s.entries.iter_mut() {
                    *e = None;
                }
                if let Some(r) = s.record.as_mut() {
                    r.purge();
                }
            }
            Protocol::Legacy => {
                let held = s.entries.iter().any(Option::is_some) || s.tombstone.is_some();
                if !held && s.counter.is_none() {
                    return;
                }
                let tok = Self::legacy_next(s);
                for e in s.entries.iter_mut() {
                    *e = None;
                }
                s.tombstone = Some(tok);
            }
        }
    }
}

impl Model for Protocols {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            fills: vec![
                Fill {
                    phase: Phase::Idle,
                    lease: None,
                    locked: false,
                    variant: 0,
                    started: 0,
                    fetched: 0,
                    seen: None,
                    too_old: false,
                };
                self.fills
            ],
            started: 0,
            origin_version: 1,
            updates: 0,
            purges: 0,
            flushes: 0,
            clock: 0,
            entries: vec![None; self.variants as usize],
            tombstone: None,
            counter: None,
            record: None,
            epochs: 0,
            lock: None,
            landed: vec![None; self.variants as usize],
            purged_at: None,
            purged_version: 0,
            violation_order: false,
            violation_stale: false,
            indexed: false,
            tag_record: None,
            tag_note: None,
            tag_purge: TagPurge::Idle,
            tag_purges: 0,
            violation_tag: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.violation_order || s.violation_stale || s.violation_tag {
            return;
        }
        for (i, f) in s.fills.iter().enumerate() {
            match f.phase {
                Phase::Idle | Phase::Done if s.started < self.max_starts => {
                    for v in 0..self.variants {
                        if s.lock.is_none() {
                            actions.push(Action::StartLocked(i, v));
                        }
                        if self.unlocked {
                            actions.push(Action::StartUnlocked(i, v));
                        }
                    }
                }
                Phase::Leased => actions.push(Action::Fetch(i)),
                Phase::Fetched(_) if self.tags != Tags::Off => {
                    actions.push(Action::Index(i));
                    actions.push(Action::Abandon(i));
                }
                Phase::Fetched(_) | Phase::Indexed(_) => {
                    actions.push(Action::Write(i));
                    actions.push(Action::Abandon(i));
                }
                _ => {}
            }
        }
        if s.updates < self.max_updates {
            actions.push(Action::Update);
        }
        if s.purges < self.max_purges {
            actions.push(Action::Purge);
        }
        if s.lock.is_some() {
            actions.push(Action::LockExpires);
        }
        match self.protocol {
            Protocol::Fenced if s.record.is_some() => actions.push(Action::FenceExpires),
            Protocol::Legacy
                if s.counter.is_some()
                    && s.lock.is_none()
                    && s.tombstone.is_none()
                    && s.entries.iter().all(Option::is_none) =>
            {
                actions.push(Action::FenceExpires)
            }
            _ => {}
        }
        for (v, e) in s.entries.iter().enumerate() {
            if e.is_some() {
                actions.push(Action::EntryExpires(v as u8));
            }
        }
        if s.tombstone.is_some() {
            actions.push(Action::TombstoneExpires);
        }
        if s.flushes < self.max_flushes {
            actions.push(Action::Flush);
        }
        if self.tags != Tags::Off {
            match s.tag_purge {
                TagPurge::Idle if s.tag_purges < 1 => actions.push(Action::TagPurgeBegin),
                TagPurge::Listed { .. } => actions.push(Action::TagPurgeFence),
                _ => {}
            }
            if s.tag_record.is_some() {
                actions.push(Action::TagRecordExpires);
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::StartLocked(i, v) => self.start(&mut s, i, v, true),
            Action::StartUnlocked(i, v) => self.start(&mut s, i, v, false),
            Action::Fetch(i) => {
                if self.tags != Tags::Off {
                    s.clock += 1;
                    s.fills[i].fetched = s.clock;
                }
                s.fills[i].phase = Phase::Fetched(s.origin_version);
            }
            Action::Index(i) => {
                let Phase::Fetched(version) = s.fills[i].phase else {
                    return None;
                };
                s.indexed = true;
                s.fills[i].seen = s.tag_record;
                s.fills[i].phase = Phase::Indexed(version);
            }
            Action::TagPurgeBegin => {
                s.clock += 1;
                s.tag_purges += 1;
                let (at, id, version) = (s.clock, s.tag_purges, s.origin_version);
                s.tag_record = Some((at, id));
                s.tag_purge = match s.indexed {
                    true => TagPurge::Listed { at, id, version },
                    // Nothing listed: nothing to fence; it has returned.
                    false => {
                        s.purged_version = version;
                        TagPurge::Done { at }
                    }
                };
            }
            Action::TagPurgeFence => {
                let TagPurge::Listed { at, id, version } = s.tag_purge else {
                    return None;
                };
                // It returns once its key is fenced.
                s.purged_version = version;
                for e in s.entries.iter_mut() {
                    *e = None;
                }
                if self.tags == Tags::Recorded && s.record.is_none() {
                    // The purge makes the record to note itself in.
                    s.epochs += 1;
                    s.record = Some(FenceRecord::new(s.epochs));
                }
                if let Some(r) = s.record.as_mut() {
                    let floor = r.purge();
                    if self.tags == Tags::Recorded {
                        s.tag_note = Some((id, floor));
                    }
                }
                s.tag_purge = TagPurge::Done { at };
            }
            Action::TagRecordExpires => {
                // Only past its window: a fill that asked the origin before
                // the purge and has not written yet is older than that.
                let (at, _) = s.tag_record.take()?;
                for f in s.fills.iter_mut() {
                    if matches!(f.phase, Phase::Fetched(_) | Phase::Indexed(_)) && f.fetched < at {
                        f.too_old = true;
                    }
                }
            }
            Action::Write(i) => {
                let version = match s.fills[i].phase {
                    Phase::Fetched(v) | Phase::Indexed(v) => v,
                    _ => return None,
                };
                let fill = s.fills[i];
                if self.write(&mut s, i, version) {
                    let v = fill.variant as usize;
                    let later_write = s.landed[v].is_some_and(|t| t > fill.started);
                    let later_purge = s.purged_at.is_some_and(|t| t > fill.started);
                    if later_write || later_purge {
                        s.violation_order = true;
                    }
                    if version < s.purged_version {
                        s.violation_stale = true;
                    }
                    // A tag purge that began after this fill asked the
                    // origin, and will not delete what it wrote (done, or
                    // the key is not among those it still has to fence).
                    if let TagPurge::Done { at } = s.tag_purge
                        && at > fill.fetched
                    {
                        s.violation_tag = true;
                    }
                    s.landed[v] = Some(s.landed[v].map_or(fill.started, |t| t.max(fill.started)));
                }
                if s.lock == Some(i) {
                    s.lock = None;
                }
                s.fills[i].phase = Phase::Done;
            }
            Action::Abandon(i) => {
                if s.lock == Some(i) {
                    s.lock = None;
                }
                s.fills[i].phase = Phase::Done;
            }
            Action::Update => {
                s.origin_version += 1;
                s.updates += 1;
            }
            Action::Purge => {
                s.clock += 1;
                s.purges += 1;
                s.purged_at = Some(s.clock);
                s.purged_version = s.origin_version;
                self.purge(&mut s);
            }
            Action::LockExpires => s.lock = None,
            Action::FenceExpires => {
                s.record = None;
                s.counter = None;
                s.tag_note = None;
            }
            Action::EntryExpires(v) => s.entries[v as usize] = None,
            Action::TombstoneExpires => s.tombstone = None,
            Action::Flush => {
                s.flushes += 1;
                s.tag_record = None;
                s.tag_note = None;
                s.indexed = false;
                s.record = None;
                s.counter = None;
                s.tombstone = None;
                s.lock = None;
                for e in s.entries.iter_mut() {
                    *e = None;
                }
            }
        }
        // Keep the locked flag honest for the format of counterexamples.
        for (i, f) in s.fills.iter_mut().enumerate() {
            if f.locked && s.lock != Some(i) && f.phase != Phase::Done {
                f.locked = false;
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(
                "a write never lands after a later write or purge",
                |_, s: &State| !s.violation_order,
            ),
            Property::always("no stale version after a purge", |_, s: &State| {
                !s.violation_stale
            }),
            Property::sometimes("a write lands", |_, s: &State| {
                s.landed.iter().any(Option::is_some)
            }),
        ];
        if self.tags != Tags::Off {
            properties.push(Property::always(
                "no tag purge undone by a fill that asked the origin before it",
                |_, s: &State| !s.violation_tag,
            ));
        }
        if self.tags == Tags::Recorded {
            properties.push(Property::sometimes(
                "a fill that started after a tag purge fenced its key lands",
                |_, s: &State| {
                    matches!(s.tag_purge, TagPurge::Done { .. })
                        && s.tag_note.is_some()
                        && s.entries.iter().any(Option::is_some)
                },
            ));
        }
        properties
    }
}

/// `fills` gateways (each fill may start again once done), `starts`
/// rebuilds in all, one origin update, one purge, one flush.
fn model(protocol: Protocol, fills: usize, starts: u8, variants: u8) -> Protocols {
    Protocols {
        protocol,
        fills,
        max_starts: starts,
        variants,
        max_updates: 1,
        max_purges: 1,
        max_flushes: 1,
        unlocked: true,
        tags: Tags::Off,
    }
}

#[test]
fn the_legacy_protocol_breaks_both_invariants() {
    let checker = model(Protocol::Legacy, 2, 3, 1)
        .checker()
        .threads(2)
        .spawn_bfs()
        .join();
    let order = checker.assert_any_discovery("a write never lands after a later write or purge");
    let stale = checker.assert_any_discovery("no stale version after a purge");
    eprintln!(
        "legacy counterexamples ({} states):\n  order: {:?}\n  stale: {:?}",
        checker.unique_state_count(),
        order.into_actions(),
        stale.into_actions()
    );
}

/// With every fill holding the lock, the checker still finds the legacy
/// protocol letting an old write win, twice over: a purge's tombstone whose
/// hold ended before a paused holder resumed (a time bound is no argument);
/// and, with no purge at all, the counter lapsing with the lock on a key
/// without an entry, so the next lock re-issues the paused holder's token
/// (issue #19's cold key).
#[test]
fn the_legacy_protocol_breaks_with_locks_only() {
    for purges in [1, 0] {
        let checker = Protocols {
            unlocked: false,
            max_purges: purges,
            ..model(Protocol::Legacy, 2, 3, 1)
        }
        .checker()
        .threads(2)
        .spawn_bfs()
        .join();
        let path = checker.assert_any_discovery("a write never lands after a later write or purge");
        let actions = path.into_actions();
        eprintln!("legacy, locks only, {purges} purge(s): {actions:?}");
        if purges == 0 {
            assert!(actions.contains(&Action::FenceExpires), "{actions:?}");
        }
    }
}

/// The cold-key pause of issue #19, as the model's counterexample: a leader's
/// lock (token 1) lapses with the counter on a key with no entry, the next
/// lock draws token 1 again, writes, and the paused leader's equal token
/// lands after it.
#[test]
fn the_legacy_protocol_reissues_a_token_on_a_cold_key() {
    let m = model(Protocol::Legacy, 2, 3, 1);
    let mut s = m.init_states().remove(0);
    for action in [
        Action::StartLocked(0, 0),
        Action::Fetch(0),
        Action::Update,
        Action::LockExpires,
        Action::FenceExpires,
        Action::StartLocked(1, 0),
        Action::Fetch(1),
        Action::Write(1),
        Action::Write(0),
    ] {
        let mut enabled = Vec::new();
        m.actions(&s, &mut enabled);
        assert!(enabled.contains(&action), "{action:?} not enabled in {s:?}");
        s = m.next_state(&s, action).expect("a step");
    }
    assert!(s.violation_order, "the paused leader's old version won");
}

#[test]
fn the_fenced_protocol_holds_for_two_gateways_and_two_variants() {
    let checker = model(Protocol::Fenced, 2, 3, 2)
        .checker()
        .threads(2)
        .spawn_bfs()
        .join();
    checker.assert_properties();
    eprintln!(
        "fenced, 2 fills, 2 variants: {} states, depth {}",
        checker.unique_state_count(),
        checker.max_depth()
    );
}

#[test]
fn the_fenced_protocol_holds_for_three_gateways() {
    let checker = model(Protocol::Fenced, 3, 3, 1)
        .checker()
        .threads(2)
        .spawn_bfs()
        .join();
    checker.assert_properties();
    eprintln!(
        "fenced, 3 fills: {} states, depth {}",
        checker.unique_state_count(),
        checker.max_depth()
    );
}

/// Issue #24's race, without the purge record: a fill asks the origin, the
/// tag is purged (its index does not list the key yet: nothing to fence),
/// the fill joins the index and writes the old answer after the purge.
#[test]
fn a_tag_purge_without_its_record_is_undone_by_a_racing_fill() {
    let checker = Protocols {
        tags: Tags::ListedOnly,
        max_purges: 0,
        ..model(Protocol::Fenced, 2, 2, 1)
    }
    .checker()
    .threads(2)
    .spawn_bfs()
    .join();
    let path = checker
        .assert_any_discovery("no tag purge undone by a fill that asked the origin before it");
    eprintln!("tag purge, listed keys only: {:?}", path.into_actions());
}

/// Today's tag purge: record, list, fence (noting the purge in the key's
/// record); a tagged fill joins the index, reads the record, writes. Every
/// invariant holds, the lapse of the purge record and of the key's record,
/// `FLUSHALL` and pauses included; and a fill that started after the purge
/// fenced its key lands (no clock).
#[test]
fn the_tag_purge_protocol_holds_for_two_and_three_gateways() {
    for (fills, starts, variants) in [(2, 2, 1), (3, 2, 1)] {
        let checker = Protocols {
            tags: Tags::Recorded,
            max_purges: 0,
            ..model(Protocol::Fenced, fills, starts, variants)
        }
        .checker()
        .threads(2)
        .spawn_bfs()
        .join();
        checker.assert_properties();
        eprintln!(
            "tag purges, {fills} fills: {} states, depth {}",
            checker.unique_state_count(),
            checker.max_depth()
        );
    }
}
