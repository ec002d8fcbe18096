//! How a state event writes its lists of offsets: consecutive offsets as one run.
//!
//! A poll that hands out 100 events of a backlog took, and delivered, 100 consecutive
//! offsets; written one by one (`{"offset":…,"stream":…,"version":…}` each) its `Polled`
//! event was about 6 KB, stored in the state stream and read back by every process that
//! folds it (and, on Redis, by every filtered scan of the global log that passes over it).
//! Written as runs it is a few dozen bytes. In memory nothing changes: these are `serde`
//! adapters for the same `Vec<u64>` and `Vec<Taken>` the state folds.
//!
//! - An offset list is a JSON array whose items are an offset `n`, or `[first, last]` for
//!   every offset from `first` to `last`. A list written before runs existed (numbers
//!   only) reads as it always did.
//! - A `taken` list is an array of `[offset, stream, version, count]`: `count` events of
//!   one stream at consecutive offsets and versions. The object form written before
//!   (`{"offset", "stream", "version"}`) still reads.
//!
//! An older Concord reading a run refuses the event as corrupted (it expects a number, or a
//! three-field entry) instead of folding it wrongly.

use std::fmt;

use concord_core::{StreamName, Version};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};

use crate::state::Taken;

/// The most offsets one list may stand for once its runs are expanded: more than any
/// decision writes (a poll takes at most `OUTSTANDING_MAX`, a snapshot's parked events
/// are in its entries), so a damaged run cannot make a fold allocate without bound.
const EXPANDED_MAX: u64 = 1_000_000;

/// `items` in order as maximal runs: each run's first item and its length, where
/// `follows(first, next, k)` says whether `next` is what comes `k` places after `first`.
fn runs<'a, T>(
    items: &'a [T],
    follows: impl Fn(&T, &T, u64) -> bool + 'a,
) -> impl Iterator<Item = (&'a T, u64)> + 'a {
    let mut rest = items.iter().peekable();
    std::iter::from_fn(move || {
        let first = rest.next()?;
        let mut count: u64 = 1;
        while rest.next_if(|next| follows(first, next, count)).is_some() {
            count += 1;
        }
        Some((first, count))
    })
}

/// Refuses a run of `more` items on top of the `held` already expanded when together they
/// would stand for more than [`EXPANDED_MAX`].
fn within_bound<E: de::Error>(more: u64, held: usize) -> Result<(), E> {
    if more.saturating_add(held as u64) > EXPANDED_MAX {
        return Err(E::custom(format!(
            "the list stands for more than {EXPANDED_MAX} entries"
        )));
    }
    Ok(())
}

/// `#[serde(with = "runs::offsets")]` for a `Vec<u64>`.
pub(crate) mod offsets {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(offsets: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for (&first, count) in runs(offsets, |first, next, k| {
            Some(*next) == first.checked_add(k)
        }) {
            if count == 1 {
                seq.serialize_element(&first)?;
            } else {
                // `runs` only counts offsets that `checked_add` reached.
                seq.serialize_element(&[first, first + (count - 1)])?;
            }
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        d.deserialize_seq(OffsetsVisitor)
    }

    struct OffsetsVisitor;

    impl<'de> Visitor<'de> for OffsetsVisitor {
        type Value = Vec<u64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of offsets and [first, last] runs")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(item) = seq.next_element::<Item>()? {
                let (first, last) = match item {
                    Item::One(n) => (n, n),
                    Item::Run(first, last) => (first, last),
                };
                if last < first {
                    return Err(de::Error::custom(format!(
                        "the run [{first}, {last}] ends before it starts"
                    )));
                }
                within_bound((last - first).saturating_add(1), out.len())?;
                out.extend(first..=last);
            }
            Ok(out)
        }
    }

    /// One item of an offset list.
    enum Item {
        One(u64),
        Run(u64, u64),
    }

    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct ItemVisitor;
            impl<'de> Visitor<'de> for ItemVisitor {
                type Value = Item;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an offset or a [first, last] run")
                }
                fn visit_u64<E: de::Error>(self, n: u64) -> Result<Item, E> {
                    Ok(Item::One(n))
                }
                fn visit_i64<E: de::Error>(self, n: i64) -> Result<Item, E> {
                    u64::try_from(n)
                        .map(Item::One)
                        .map_err(|_| E::custom(format!("the offset {n} is negative")))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                    let first = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                    let last = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                    if seq.next_element::<de::IgnoredAny>()?.is_some() {
                        return Err(de::Error::invalid_length(3, &self));
                    }
                    Ok(Item::Run(first, last))
                }
            }
            d.deserialize_any(ItemVisitor)
        }
    }
}

/// `#[serde(with = "runs::taken")]` for a `Vec<Taken>`.
pub(crate) mod taken {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(taken: &[Taken], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let follows = |first: &Taken, next: &Taken, k: u64| {
            next.stream == first.stream
                && Some(next.offset) == first.offset.checked_add(k)
                && Some(next.version.get()) == first.version.get().checked_add(k)
        };
        for (first, count) in runs(taken, follows) {
            seq.serialize_element(&(first.offset, &first.stream, first.version, count))?;
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Taken>, D::Error> {
        d.deserialize_seq(TakenVisitor)
    }

    struct TakenVisitor;

    impl<'de> Visitor<'de> for TakenVisitor {
        type Value = Vec<Taken>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of [offset, stream, version, count] runs")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Taken>, A::Error> {
            let mut out: Vec<Taken> = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(run) = seq.next_element::<Run>()? {
                let Run {
                    offset,
                    stream,
                    version,
                    count,
                } = run;
                let last_offset = offset.checked_add(count.saturating_sub(1));
                let last_version = version.get().checked_add(count.saturating_sub(1));
                if count == 0 || last_offset.is_none() || last_version.is_none() {
                    return Err(de::Error::custom(format!(
                        "the run of {count} events at offset {offset}, version {version} is not a run"
                    )));
                }
                within_bound(count, out.len())?;
                for i in 0..count {
                    out.push(Taken {
                        offset: offset + i,
                        stream: stream.clone(),
                        version: Version(version.get() + i),
                    });
                }
            }
            Ok(out)
        }
    }

    /// One run as written, or one event in the object form written before runs.
    struct Run {
        offset: u64,
        stream: StreamName,
        version: Version,
        count: u64,
    }

    impl<'de> Deserialize<'de> for Run {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct RunVisitor;
            impl<'de> Visitor<'de> for RunVisitor {
                type Value = Run;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("[offset, stream, version, count] or {offset, stream, version}")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Run, A::Error> {
                    let field = |i: usize| de::Error::invalid_length(i, &self);
                    let offset = seq.next_element()?.ok_or_else(|| field(0))?;
                    let stream = seq.next_element()?.ok_or_else(|| field(1))?;
                    let version = seq.next_element()?.ok_or_else(|| field(2))?;
                    let count = seq.next_element()?.ok_or_else(|| field(3))?;
                    if seq.next_element::<de::IgnoredAny>()?.is_some() {
                        return Err(field(5));
                    }
                    Ok(Run {
                        offset,
                        stream,
                        version,
                        count,
                    })
                }
                fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Run, A::Error> {
                    let one = Taken::deserialize(de::value::MapAccessDeserializer::new(map))?;
                    Ok(Run {
                        offset: one.offset,
                        stream: one.stream,
                        version: one.version,
                        count: 1,
                    })
                }
            }
            d.deserialize_any(RunVisitor)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Offsets(#[serde(with = "offsets")] Vec<u64>);

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Takes(#[serde(with = "taken")] Vec<Taken>);

    fn take(offset: u64, stream: &str, version: u64) -> Taken {
        Taken {
            offset,
            stream: StreamName::new(stream).unwrap(),
            version: Version(version),
        }
    }

    #[test]
    fn consecutive_offsets_are_written_as_runs_and_read_back_the_same() {
        let list = Offsets(vec![3, 4, 5, 6, 9, 11, 12, 2, 1, u64::MAX]);
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, "[[3,6],9,[11,12],2,1,18446744073709551615]");
        assert_eq!(serde_json::from_str::<Offsets>(&json).unwrap(), list);
        assert_eq!(serde_json::to_string(&Offsets(vec![])).unwrap(), "[]");
    }

    #[test]
    fn offset_lists_written_before_runs_still_read() {
        let old: Offsets = serde_json::from_str("[7, 8, 10]").unwrap();
        assert_eq!(old, Offsets(vec![7, 8, 10]));
    }

    #[test]
    fn damaged_runs_are_refused_not_expanded() {
        for bad in [
            "[[5, 4]]",
            "[[0, 18446744073709551615]]",
            "[[1, 2, 3]]",
            "[[1]]",
            "[-1]",
            "[\"1\"]",
        ] {
            assert!(serde_json::from_str::<Offsets>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_taken_from_one_stream_in_order_are_one_run() {
        let takes = Takes(vec![
            take(10, "a-1", 4),
            take(11, "a-1", 5),
            take(12, "a-1", 6),
            take(13, "b-1", 1),
            take(15, "b-1", 2),
            take(16, "a-1", 7),
        ]);
        let json = serde_json::to_string(&takes).unwrap();
        assert_eq!(
            json,
            r#"[[10,"a-1",4,3],[13,"b-1",1,1],[15,"b-1",2,1],[16,"a-1",7,1]]"#
        );
        assert_eq!(serde_json::from_str::<Takes>(&json).unwrap(), takes);
    }

    #[test]
    fn taken_lists_written_before_runs_still_read() {
        let old: Takes = serde_json::from_str(
            r#"[{"offset":10,"stream":"a-1","version":4},{"offset":12,"stream":"b-1","version":1}]"#,
        )
        .unwrap();
        assert_eq!(old, Takes(vec![take(10, "a-1", 4), take(12, "b-1", 1)]));
    }

    #[test]
    fn damaged_taken_runs_are_refused() {
        for bad in [
            r#"[[10,"a-1",4,0]]"#,
            r#"[[10,"a-1",4,2000000]]"#,
            r#"[[18446744073709551615,"a-1",4,2]]"#,
            r#"[[10,"a-1",4]]"#,
            r#"[[10,"a-1",4,1,9]]"#,
            r#"[[10,"$group-x",4,1]]"#,
        ] {
            assert!(serde_json::from_str::<Takes>(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Whatever the list (in any order, with repeats, near `u64::MAX`), reading back
        /// what was written gives the same list.
        #[test]
        fn any_offset_list_reads_back_as_written(
            list in proptest::collection::vec(
                proptest::prop_oneof![0..40u64, (u64::MAX - 5)..=u64::MAX, proptest::num::u64::ANY],
                0..200,
            )
        ) {
            let json = serde_json::to_string(&Offsets(list.clone())).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<Offsets>(&json).unwrap().0, list);
        }

        #[test]
        fn any_taken_list_reads_back_as_written(
            list in proptest::collection::vec((0..30u64, 0..3usize, 1..30u64), 0..200)
        ) {
            let names = ["a-1", "b-1", "c-1"];
            let takes: Vec<Taken> = list
                .iter()
                .map(|&(o, s, v)| take(o, names[s % names.len()], v))
                .collect();
            let json = serde_json::to_string(&Takes(takes.clone())).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<Takes>(&json).unwrap().0, takes);
        }
    }

    /// What a Concord from before runs does with one: it reads a `Taken` with serde's
    /// derived code, which must refuse a four-item run rather than read it as one event.
    #[test]
    fn an_older_reader_refuses_a_run_instead_of_misreading_it() {
        let run =
            serde_json::to_string(&Takes(vec![take(10, "a-1", 4), take(11, "a-1", 5)])).unwrap();
        assert!(serde_json::from_str::<Vec<Taken>>(&run).is_err());
        let offsets = serde_json::to_string(&Offsets(vec![1, 2])).unwrap();
        assert!(serde_json::from_str::<Vec<u64>>(&offsets).is_err());
    }
}
