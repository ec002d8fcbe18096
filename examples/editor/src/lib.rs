//! MISSION.md's collaborative editing on Concord's command layer.
//!
//! Streams `doc-<id>`; events `DocumentCreated {"text"}`, `Inserted {"pos", "text"}`,
//! `Deleted {"pos", "len"}`, with `metadata.actor`. Positions and lengths count Unicode
//! scalar values (Rust `char`s), never bytes.
//!
//! An edit is decided on the version the editor saw. When others edited meanwhile, the
//! `Merge` policy transforms it over their edits ([`transform`], operational transform) and
//! appends it after them, so both are kept. The stream is the one order every replica
//! replays, so every replica converges to the same text; the transform guarantees that an
//! edit keeps its intent: an insert lands between the same characters, and a delete removes
//! exactly the characters its author saw — never text inserted concurrently.

use std::io::Write;
use std::sync::Arc;

use concord_command::report::{describe, event_table};
use concord_command::{Aggregate, CommandError, Committed, Handler, Options, Policy};
use concord_core::{EventStore, InvalidInput, StoreError, StreamName, Version};
use serde::{Deserialize, Serialize};

/// The events of a document stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EditEvent {
    /// The document was created with `text`.
    DocumentCreated {
        /// The initial text.
        text: String,
    },
    /// `text` was inserted before the character at `pos`.
    Inserted {
        /// Where, in characters.
        pos: u64,
        /// What.
        text: String,
    },
    /// `len` characters were deleted from `pos`.
    Deleted {
        /// Where, in characters.
        pos: u64,
        /// How many characters.
        len: u64,
    },
}

/// What editors ask a document to do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EditCommand {
    /// Create the document.
    Create {
        /// Its initial text.
        text: String,
    },
    /// Insert `text` before the character at `pos`.
    Insert {
        /// Where, in characters.
        pos: u64,
        /// What.
        text: String,
    },
    /// Delete `len` characters from `pos`.
    Delete {
        /// Where, in characters.
        pos: u64,
        /// How many characters.
        len: u64,
    },
}

/// Why a document refuses an edit.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum EditRejection {
    /// Edits need a document.
    #[error("the document does not exist")]
    NotCreated,
    /// A document is created once.
    #[error("the document already exists")]
    AlreadyCreated,
    /// The range is not inside the text the editor saw.
    #[error("characters {pos}..{end} are outside the text, which has {len} characters")]
    OutOfRange {
        /// The start.
        pos: u64,
        /// The end (exclusive).
        end: u64,
        /// The text's length in characters.
        len: u64,
    },
    /// An edit that changes nothing.
    #[error("the edit is empty")]
    Empty,
}

/// A document's state.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Document {
    /// Whether it was created.
    pub created: bool,
    /// The text.
    pub text: String,
}

/// The byte offset of character `pos` of `text` (its end when `pos` is past it).
fn byte_at(text: &str, pos: u64) -> usize {
    usize::try_from(pos)
        .ok()
        .and_then(|p| text.char_indices().nth(p))
        .map_or(text.len(), |(i, _)| i)
}

fn char_len(text: &str) -> u64 {
    text.chars().count() as u64
}

/// Applies one edit event to `text` (ranges past the end are clipped).
pub fn apply_to(text: &mut String, event: &EditEvent) {
    match event {
        EditEvent::DocumentCreated { text: initial } => initial.clone_into(text),
        EditEvent::Inserted {
            pos,
            text: inserted,
        } => {
            let at = byte_at(text, *pos);
            text.insert_str(at, inserted);
        }
        EditEvent::Deleted { pos, len } => {
            let (from, to) = (byte_at(text, *pos), byte_at(text, pos.saturating_add(*len)));
            text.replace_range(from..to, "");
        }
    }
}

impl Aggregate for Document {
    type Event = EditEvent;
    type Command = EditCommand;
    type Rejection = EditRejection;

    fn apply(&mut self, event: &EditEvent) {
        if let EditEvent::DocumentCreated { .. } = event {
            self.created = true;
        }
        apply_to(&mut self.text, event);
    }

    fn decide(&self, command: &EditCommand) -> Result<Vec<EditEvent>, EditRejection> {
        let len = char_len(&self.text);
        match (command, self.created) {
            (EditCommand::Create { text }, false) => {
                Ok(vec![EditEvent::DocumentCreated { text: text.clone() }])
            }
            (EditCommand::Create { .. }, true) => Err(EditRejection::AlreadyCreated),
            (_, false) => Err(EditRejection::NotCreated),
            (EditCommand::Insert { text, .. }, _) if text.is_empty() => Err(EditRejection::Empty),
            (EditCommand::Delete { len: 0, .. }, _) => Err(EditRejection::Empty),
            (EditCommand::Insert { pos, text }, _) if *pos <= len => {
                Ok(vec![EditEvent::Inserted {
                    pos: *pos,
                    text: text.clone(),
                }])
            }
            (EditCommand::Delete { pos, len: n }, _)
                if pos.checked_add(*n).is_some_and(|end| end <= len) =>
            {
                Ok(vec![EditEvent::Deleted { pos: *pos, len: *n }])
            }
            (EditCommand::Insert { pos, .. }, _) => Err(EditRejection::OutOfRange {
                pos: *pos,
                end: *pos,
                len,
            }),
            (EditCommand::Delete { pos, len: n }, _) => Err(EditRejection::OutOfRange {
                pos: *pos,
                end: pos.saturating_add(*n),
                len,
            }),
        }
    }

    fn policy(command: &EditCommand) -> Policy<Self> {
        match command {
            EditCommand::Create { .. } => Policy::Reject,
            EditCommand::Insert { .. } | EditCommand::Delete { .. } => edit_policy(),
        }
    }
}

/// Edits: merged by operational transform over whatever was committed concurrently.
pub fn edit_policy() -> Policy<Document> {
    Policy::merge(
        |_base: &Document, concurrent: &[EditEvent], ours: &[EditEvent]| {
            Ok(transform_over(ours, concurrent))
        },
    )
}

/// Transforms `a` so that it applies after `b` and keeps its intent (both were decided on
/// the same text). May split a delete in two (around a concurrent insert) or drop it (its
/// characters were already deleted).
///
/// Two inserts at the same position are ordered by their text, so that the result does not
/// depend on which one is transformed (TP1: `b; transform(a, b)` and `a; transform(b, a)`
/// give the same text).
pub fn transform(a: &EditEvent, b: &EditEvent) -> Vec<EditEvent> {
    use EditEvent::{Deleted, Inserted};
    match (a, b) {
        (Inserted { text, .. }, _) if text.is_empty() => Vec::new(),
        (Deleted { len: 0, .. }, _) => Vec::new(),
        (Inserted { pos: ap, text: at }, Inserted { pos: bp, text: bt }) => {
            if ap < bp || (ap == bp && at < bt) {
                vec![a.clone()]
            } else {
                vec![Inserted {
                    pos: ap.saturating_add(char_len(bt)),
                    text: at.clone(),
                }]
            }
        }
        (Inserted { pos: ap, text }, Deleted { pos: bp, len: bl }) => {
            let pos = if ap <= bp {
                *ap
            } else if *ap >= bp.saturating_add(*bl) {
                ap - bl
            } else {
                *bp
            };
            vec![Inserted {
                pos,
                text: text.clone(),
            }]
        }
        (Deleted { pos: ap, len: al }, Inserted { pos: bp, text: bt }) => {
            let n = char_len(bt);
            if bp <= ap {
                vec![Deleted {
                    pos: ap.saturating_add(n),
                    len: *al,
                }]
            } else if *bp >= ap.saturating_add(*al) {
                vec![a.clone()]
            } else {
                let before = bp - ap;
                vec![
                    Deleted {
                        pos: *ap,
                        len: before,
                    },
                    Deleted {
                        pos: ap.saturating_add(n),
                        len: al - before,
                    },
                ]
            }
        }
        (Deleted { pos: ap, len: al }, Deleted { pos: bp, len: bl }) => {
            let (a_end, b_end) = (ap.saturating_add(*al), bp.saturating_add(*bl));
            let overlap = a_end.min(b_end).saturating_sub(*ap.max(bp));
            let len = al - overlap;
            if len == 0 {
                return Vec::new();
            }
            let pos = if ap <= bp {
                *ap
            } else if *ap >= b_end {
                ap - bl
            } else {
                *bp
            };
            vec![Deleted { pos, len }]
        }
        (EditEvent::DocumentCreated { .. }, _) | (_, EditEvent::DocumentCreated { .. }) => {
            vec![a.clone()]
        }
    }
}

/// Transforms the sequence `a` over the sequence `b` (both based on the same text): returns
/// `(a', b')` with `a'` applying after `b` and `b'` after `a`.
fn transform_pair(a: Vec<EditEvent>, b: Vec<EditEvent>) -> (Vec<EditEvent>, Vec<EditEvent>) {
    match (a.as_slice(), b.as_slice()) {
        ([], _) | (_, []) => (a, b),
        ([x], [y]) => (transform(x, y), transform(y, x)),
        ([x, rest @ ..], _) if !rest.is_empty() => {
            let rest = rest.to_vec();
            let (x2, b1) = transform_pair(vec![x.clone()], b);
            let (rest2, b2) = transform_pair(rest, b1);
            (x2.into_iter().chain(rest2).collect(), b2)
        }
        (_, [y, rest @ ..]) => {
            let rest = rest.to_vec();
            let (a1, y2) = transform_pair(a, vec![y.clone()]);
            let (a2, rest2) = transform_pair(a1, rest);
            (a2, y2.into_iter().chain(rest2).collect())
        }
    }
}

/// Transforms our edits (decided on some text) over `theirs` (committed after that text,
/// in order): the edits to append after theirs.
pub fn transform_over(ours: &[EditEvent], theirs: &[EditEvent]) -> Vec<EditEvent> {
    transform_pair(ours.to_vec(), theirs.to_vec()).0
}

/// The stream of document `id`: `doc-<id>`.
///
/// # Errors
/// [`InvalidInput`] when the name is not a valid stream name.
pub fn doc_stream(id: &str) -> Result<StreamName, InvalidInput> {
    StreamName::new(format!("doc-{id}"))
}

/// The result of one edit.
pub type EditResult = Result<Committed<EditEvent>, CommandError<EditRejection>>;

pub use concord_command::report::{DemoError, read_log};

/// The first document `doc-demo-<n>` that does not exist yet.
async fn fresh_doc(store: &dyn EventStore) -> Result<StreamName, DemoError> {
    for n in 1_u32.. {
        let stream = doc_stream(&format!("demo-{n}")).map_err(StoreError::from)?;
        if store.stream_version(&stream).await? == Version::NONE {
            return Ok(stream);
        }
    }
    Err(DemoError::Command("no free document name".into()))
}

/// `concord demo editor`: three editors edit "Hello wörld" concurrently, all on version 1:
/// one inserts, one deletes a word, one inserts inside the deleted word. The `Merge` policy
/// transforms each over what committed first. Prints the event log as MISSION.md's table,
/// what the policy did for each edit, and the text every replica converges to.
///
/// # Errors
/// Store and I/O failures.
pub async fn demo(store: Arc<dyn EventStore>, out: &mut dyn Write) -> Result<(), DemoError> {
    let docs = Handler::<Document>::new(Arc::clone(&store));
    let stream = fresh_doc(store.as_ref()).await?;
    let _ = docs
        .execute(
            &stream,
            EditCommand::Create {
                text: "Hello wörld".into(),
            },
            &Options::by("ann"),
        )
        .await?;
    let edits = [
        (
            "ann",
            EditCommand::Insert {
                pos: 5,
                text: ",".into(),
            },
            "insert \",\" at 5",
        ),
        (
            "bob",
            EditCommand::Delete { pos: 6, len: 5 },
            "delete 5 characters at 6 (\"wörld\")",
        ),
        (
            "cid",
            EditCommand::Insert {
                pos: 8,
                text: "-ö-".into(),
            },
            "insert \"-ö-\" at 8",
        ),
        (
            "dan",
            EditCommand::Insert {
                pos: 11,
                text: "!".into(),
            },
            "insert \"!\" at 11",
        ),
    ];
    let start = Arc::new(tokio::sync::Barrier::new(edits.len()));
    let mut tasks = Vec::new();
    for (editor, command, what) in edits {
        let (docs, stream, start) = (docs.clone(), stream.clone(), Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            let loaded = docs.load(&stream).await?;
            start.wait().await;
            let result = docs.execute_on(loaded, command, &Options::by(editor)).await;
            Ok::<_, CommandError<EditRejection>>((editor, what, result))
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    writeln!(
        out,
        "## {stream}: four editors, all on version 1, under Merge (operational transform)\n"
    )?;
    write!(
        out,
        "{}",
        event_table(&read_log(store.as_ref(), &stream).await?)
    )?;
    writeln!(out)?;
    for (editor, what, result) in &results {
        writeln!(
            out,
            "- {editor}: {what} (decided on version 1): {}",
            describe(result)
        )?;
    }
    let text = docs.load(&stream).await?.state.text;
    writeln!(out, "- every replica replays the stream to: {text:?}")?;
    Ok(())
}
