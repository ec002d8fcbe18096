//! Property tests of core's pure rules against naive restatements of API.md: the append
//! decision (`plan_append`), the id check, the rebase rule, `ExpectedVersion`, and the
//! name rules at their boundaries (1, 256 and 257 bytes; multibyte characters).
//!
//! proptest prints the minimal failing input and keeps the failing seed in
//! `proptest-regressions/`. `CONCORD_TEST_SCALE` multiplies the case count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use concord_core::{
    AppendPlan, AppendRequest, Category, EventId, EventType, ExpectedVersion, IdCheck, Json,
    NAME_BYTES_MAX, NewEvent, StreamName, Tag, Version, check_ids, may_rebase, plan_append,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn scale() -> u32 {
    std::env::var("CONCORD_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1u32)
        .max(1)
}

const TYPES: [&str; 4] = ["Deposited", "Withdrawn", "AccountClosed", "BidPlaced"];

fn ty(i: usize) -> EventType {
    EventType::new(TYPES[i]).unwrap()
}

fn expected_strategy() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::Exists),
        (0u64..=300).prop_map(|v| ExpectedVersion::Exact(Version(v))),
        any::<u64>().prop_map(|v| ExpectedVersion::Exact(Version(v))),
    ]
}

/// API.md's rules, written out plainly and independently of core.
fn naive_plan(
    expected: ExpectedVersion,
    rebase_unless: Option<&[EventType]>,
    ids: &[EventId],
    found: &[Option<Version>],
    stream_types: &[EventType],
) -> AppendPlan {
    let actual = Version(stream_types.len() as u64);
    let known: Vec<EventId> = ids
        .iter()
        .zip(found)
        .filter(|(_, f)| f.is_some())
        .map(|(id, _)| *id)
        .collect();
    if !known.is_empty() {
        if known.len() == ids.len() {
            let vs: Vec<u64> = found.iter().map(|f| f.unwrap().0).collect();
            let mut consecutive = true;
            for i in 1..vs.len() {
                if vs[i] != vs[i - 1] + 1 {
                    consecutive = false;
                }
            }
            if consecutive {
                return AppendPlan::Duplicate {
                    first: Version(vs[0]),
                    last: Version(*vs.last().unwrap()),
                };
            }
        }
        return AppendPlan::PartialDuplicate(known);
    }
    let holds = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual.0 == 0,
        ExpectedVersion::Exists => actual.0 > 0,
        ExpectedVersion::Exact(v) => v == actual,
    };
    if holds {
        return AppendPlan::Write {
            after: actual,
            rebased_from: None,
        };
    }
    if let (Some(unless), ExpectedVersion::Exact(e)) = (rebase_unless, expected)
        && e.0 < actual.0
        && !stream_types[e.0 as usize..]
            .iter()
            .any(|t| unless.contains(t))
    {
        return AppendPlan::Write {
            after: actual,
            rebased_from: Some(e),
        };
    }
    let first_concurrent = match expected {
        ExpectedVersion::Exact(e) if e.0 < actual.0 => Some(Version(e.0 + 1)),
        ExpectedVersion::NoStream if actual.0 > 0 => Some(Version(1)),
        _ => None,
    };
    AppendPlan::Conflict {
        actual,
        first_concurrent,
    }
}

/// Where each of `n` request ids stands in the stream: mostly nowhere, sometimes at a
/// random version, sometimes as a consecutive run (a real duplicate).
fn found_strategy(n: usize, actual: u64) -> BoxedStrategy<Vec<Option<Version>>> {
    if actual == 0 {
        return Just(vec![None; n]).boxed();
    }
    let scattered = vec(
        proptest::option::weighted(0.3, (1..=actual).prop_map(Version)),
        n,
    );
    let run = (1..=actual).prop_map(move |start| {
        (0..n as u64)
            .map(|i| Some(Version(start + i)))
            .collect::<Vec<_>>()
    });
    prop_oneof![3 => Just(vec![None; n]), 2 => scattered, 2 => run].boxed()
}

#[derive(Debug, Clone)]
struct Case {
    expected: ExpectedVersion,
    rebase_unless: Option<Vec<usize>>,
    n: usize,
    found: Vec<Option<Version>>,
    stream_types: Vec<usize>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        vec(prop_oneof![8 => Just(0usize), 1 => 1..TYPES.len()], 0..250),
        1usize..6,
    )
        .prop_flat_map(|(stream_types, n)| {
            let actual = stream_types.len() as u64;
            let near = prop_oneof![
                expected_strategy(),
                (0..=actual + 2).prop_map(|v| ExpectedVersion::Exact(Version(v))),
                (actual.saturating_sub(120)..=actual)
                    .prop_map(|v| ExpectedVersion::Exact(Version(v))),
            ];
            (
                near,
                proptest::option::of(vec(0..TYPES.len(), 0..3)),
                Just(n),
                found_strategy(n, actual),
                Just(stream_types),
            )
        })
        .prop_map(|(expected, rebase_unless, n, found, stream_types)| Case {
            expected,
            rebase_unless,
            n,
            found,
            stream_types,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512 * scale()))]

    #[test]
    fn plan_append_agrees_with_a_naive_reading_of_the_contract(case in case_strategy()) {
        let events: Vec<NewEvent> = (0..case.n).map(|_| NewEvent::new(ty(0), Json::empty_object())).collect();
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let stream = StreamName::new("account-1").unwrap();
        let mut request = AppendRequest::new(stream, case.expected, events);
        let unless: Option<Vec<EventType>> = case.rebase_unless.as_ref().map(|u| u.iter().map(|&i| ty(i)).collect());
        if let Some(u) = &unless {
            request = request.rebase_unless(u.clone());
        }
        let stream_types: Vec<EventType> = case.stream_types.iter().map(|&i| ty(i)).collect();
        let actual = Version(stream_types.len() as u64);
        let plan = plan_append(&request, actual, &case.found, |e| {
            stream_types[usize::try_from(e.0).unwrap()..].to_vec()
        });
        let naive = naive_plan(case.expected, unless.as_deref(), &ids, &case.found, &stream_types);
        prop_assert_eq!(plan, naive);
    }

    #[test]
    fn check_ids_is_duplicate_only_for_a_whole_consecutive_run(n in 1usize..6, start in 1u64..10_000, gap in 0usize..6, missing in 0usize..6) {
        let ids: Vec<EventId> = (0..n).map(|_| EventId::new()).collect();
        let run: Vec<Option<Version>> = (0..n as u64).map(|i| Some(Version(start + i))).collect();
        prop_assert_eq!(check_ids(&ids, &run), IdCheck::Duplicate { first: Version(start), last: Version(start + n as u64 - 1) });
        prop_assert_eq!(check_ids(&ids, &vec![None; n]), IdCheck::New);
        if n > 1 && gap < n - 1 {
            let mut gapped = run.clone();
            for v in gapped.iter_mut().skip(gap + 1) {
                *v = v.map(|v| Version(v.0 + 1));
            }
            prop_assert_eq!(check_ids(&ids, &gapped), IdCheck::Partial(ids.clone()));
            let mut reversed = run.clone();
            reversed.reverse();
            prop_assert_eq!(check_ids(&ids, &reversed), IdCheck::Partial(ids.clone()));
        }
        if n > 1 && missing < n {
            let mut some = run;
            some[missing] = None;
            let expected: Vec<EventId> = ids.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, id)| *id).collect();
            prop_assert_eq!(check_ids(&ids, &some), IdCheck::Partial(expected));
        }
    }

    #[test]
    fn may_rebase_iff_no_concurrent_type_is_listed(unless in vec(0..TYPES.len(), 0..4), concurrent in vec(0..TYPES.len(), 0..300)) {
        let unless: Vec<EventType> = unless.into_iter().map(ty).collect();
        let concurrent: Vec<EventType> = concurrent.into_iter().map(ty).collect();
        let naive = concurrent.iter().all(|t| !unless.contains(t));
        prop_assert_eq!(may_rebase(&unless, concurrent.iter()), naive);
    }

    #[test]
    fn expected_version_holds_exactly_as_the_contract_says(expected in expected_strategy(), actual in prop_oneof![0u64..300, any::<u64>()]) {
        let actual = Version(actual);
        let holds = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == Version(0),
            ExpectedVersion::Exists => actual != Version(0),
            ExpectedVersion::Exact(v) => v == actual,
        };
        prop_assert_eq!(expected.holds_for(actual), holds);
        let first = expected.first_concurrent(actual);
        match expected {
            ExpectedVersion::Exact(v) if v < actual => prop_assert_eq!(first, Some(Version(v.0 + 1))),
            ExpectedVersion::NoStream if actual.0 > 0 => prop_assert_eq!(first, Some(Version(1))),
            _ => prop_assert_eq!(first, None),
        }
    }

    #[test]
    fn expected_version_round_trips_through_text_and_json(expected in expected_strategy()) {
        let text = expected.to_string();
        prop_assert_eq!(text.parse::<ExpectedVersion>().unwrap(), expected);
        let json = serde_json::to_string(&expected).unwrap();
        prop_assert_eq!(serde_json::from_str::<ExpectedVersion>(&json).unwrap(), expected);
    }

    #[test]
    fn stream_names_are_valid_exactly_when_the_rules_say(name in name_strategy()) {
        let valid = !name.is_empty()
            && name.len() <= NAME_BYTES_MAX
            && !name.chars().any(char::is_control)
            && !name.starts_with('$');
        let parsed = StreamName::new(name.clone());
        prop_assert_eq!(parsed.is_ok(), valid, "{:?} ({} bytes)", name, name.len());
        if let Ok(s) = parsed {
            prop_assert_eq!(s.as_str(), name.as_str());
            let category = name.split('-').next().unwrap();
            let cat = s.category();
            prop_assert_eq!(cat.as_str(), category);
            let json = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(serde_json::from_str::<StreamName>(&json).unwrap(), s);
        }
        let type_valid = !name.is_empty() && name.len() <= NAME_BYTES_MAX && !name.chars().any(char::is_control);
        prop_assert_eq!(EventType::new(name.clone()).is_ok(), type_valid);
        prop_assert_eq!(Tag::new(name.clone()).is_ok(), type_valid && !name.contains(','));
        prop_assert_eq!(Category::new(name.clone()).is_ok(), type_valid && !name.contains('-'));
    }
}

/// Names around the boundaries: lengths 0, 1, 255, 256, 257 bytes, built from 1-, 2-, 3-
/// and 4-byte characters, with the occasional `$`, `-`, `,` or control character.
fn name_strategy() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        Just("a"),
        Just("é"),
        Just("流"),
        Just("🦀"),
        Just("-"),
        Just(","),
        Just("$"),
        Just("\n"),
        Just("\u{7f}")
    ];
    let padded = (
        prop_oneof![
            Just(0usize),
            Just(1),
            Just(255),
            Just(256),
            Just(257),
            0usize..300
        ],
        vec(unit, 0..4),
    )
        .prop_map(|(len, specials)| {
            let mut s: String = specials.concat();
            while s.len() < len {
                s.push('x');
            }
            s
        });
    let wide = (
        prop_oneof![Just("é"), Just("流"), Just("🦀")],
        60usize..=130,
    )
        .prop_map(|(c, n)| c.repeat(n));
    prop_oneof![padded, wide, "\\PC{0,40}", ".{0,10}"]
}

#[test]
fn names_at_the_boundary_lengths() {
    for (name, ok) in [
        ("a".to_owned(), true),
        ("a".repeat(256), true),
        ("a".repeat(257), false),
        ("é".repeat(128), true),
        (format!("{}a", "é".repeat(128)), false),
        ("🦀".repeat(64), true),
        (format!("{}a", "🦀".repeat(64)), false),
        (format!("a{}", "流".repeat(85)), true),
        (format!("ab{}", "流".repeat(85)), false),
        ("流".to_owned(), true),
    ] {
        assert_eq!(
            StreamName::new(name.clone()).is_ok(),
            ok,
            "{} bytes",
            name.len()
        );
        assert_eq!(
            EventType::new(name.clone()).is_ok(),
            ok,
            "{} bytes",
            name.len()
        );
        assert_eq!(Tag::new(name.clone()).is_ok(), ok, "{} bytes", name.len());
    }
}
