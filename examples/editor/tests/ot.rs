//! The operational transform's convergence property (TP1), on random texts with multi-byte
//! characters: applying `a` then `transform(b, a)` gives the same text as `b` then
//! `transform(a, b)`, for every pair of edits decided on the same text.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use concord_example_editor::{EditEvent, apply_to, transform};
use proptest::prelude::*;

fn apply_all(text: &str, edits: &[EditEvent]) -> String {
    let mut t = text.to_owned();
    for e in edits {
        apply_to(&mut t, e);
    }
    t
}

/// An edit valid on a text of `len` characters.
fn edit(len: u64) -> impl Strategy<Value = EditEvent> {
    let insert =
        (0..=len, "[abé流🦀]{1,3}").prop_map(|(pos, text)| EditEvent::Inserted { pos, text });
    if len == 0 {
        return insert.boxed();
    }
    let delete = (0..len)
        .prop_flat_map(move |pos| (Just(pos), 1..=len - pos))
        .prop_map(|(pos, len)| EditEvent::Deleted { pos, len });
    prop_oneof![insert, delete].boxed()
}

fn text_and_two_edits() -> impl Strategy<Value = (String, EditEvent, EditEvent)> {
    "[xyzé流🦀]{0,12}".prop_flat_map(|text| {
        let len = text.chars().count() as u64;
        (Just(text), edit(len), edit(len))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn transform_converges_whichever_edit_is_applied_first((text, a, b) in text_and_two_edits()) {
        let ab = apply_all(&apply_all(&text, std::slice::from_ref(&a)), &transform(&b, &a));
        let ba = apply_all(&apply_all(&text, std::slice::from_ref(&b)), &transform(&a, &b));
        prop_assert_eq!(ab, ba);
    }
}

#[test]
fn a_delete_around_a_concurrent_insert_keeps_the_inserted_text() {
    let delete = EditEvent::Deleted { pos: 1, len: 4 };
    let insert = EditEvent::Inserted {
        pos: 3,
        text: "流".into(),
    };
    let mut text = "abcdef".to_owned();
    apply_to(&mut text, &insert);
    for e in transform(&delete, &insert) {
        apply_to(&mut text, &e);
    }
    assert_eq!(text, "a流f");
}
