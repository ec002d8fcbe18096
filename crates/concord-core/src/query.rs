//! Which events a read or an append condition is about.
//!
//! Two shapes share one match rule on type and tags. [`Filter`] narrows `read_all` and
//! subscriptions (category, any of some types, all of some tags). [`Query`] is the DCB
//! query of append conditions: items combined with OR, each item "any of these types and
//! all of these tags". Every backend asks [`Query::matches`] or the equivalent indexed
//! lookup; the conformance suite keeps them in agreement.

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;
use crate::event::{RecordedEvent, TAGS_PER_EVENT_MAX};
use crate::names::{Category, EventType, Tag};

/// The most items one query may have.
pub const QUERY_ITEMS_MAX: usize = 100;

/// The most event types one filter, one query item or one `rebase_unless` list may name.
/// Every backend answers any list within it (the embedded store merges one index range per
/// type, and SQLite allows 500 terms in one compound statement).
pub const TYPES_PER_FILTER_MAX: usize = 100;

/// The most tags one filter or one query item may name: an event carries at most
/// [`TAGS_PER_EVENT_MAX`], and a filter's tags must all be on the event, so more could never
/// match. (The embedded store joins one index lookup per tag; SQLite allows 64 tables in one
/// join.)
pub const TAGS_PER_FILTER_MAX: usize = TAGS_PER_EVENT_MAX;

/// Refuses a list of types or tags longer than its maximum, naming `field` and `what`.
pub(crate) fn check_list_len(
    field: &'static str,
    whose: &str,
    what: &str,
    len: usize,
    max: usize,
) -> Result<(), InvalidInput> {
    if len > max {
        return Err(InvalidInput::new(
            field,
            format!("{whose} has {len} {what}, but at most {max} are allowed"),
        ));
    }
    Ok(())
}

fn types_match(types: &[EventType], event: &RecordedEvent) -> bool {
    types.is_empty() || types.contains(&event.event_type)
}

fn tags_match(tags: &[Tag], event: &RecordedEvent) -> bool {
    tags.iter().all(|t| event.tags.contains(t))
}

/// A filter for reading the global log: every present part must match.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Only events of streams in this category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Only events of any of these types (empty: any type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<EventType>,
    /// Only events carrying all of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

impl Filter {
    /// The filter that lets every event through.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Only events of `category`.
    #[must_use]
    pub fn category(mut self, category: Category) -> Self {
        self.category = Some(category);
        self
    }

    /// Only events of any of `types`.
    #[must_use]
    pub fn types(mut self, types: Vec<EventType>) -> Self {
        self.types = types;
        self
    }

    /// Only events with all of `tags`.
    #[must_use]
    pub fn tags(mut self, tags: Vec<Tag>) -> Self {
        self.tags = tags;
        self
    }

    /// Whether the filter lets every event through.
    pub fn is_all(&self) -> bool {
        self.category.is_none() && self.types.is_empty() && self.tags.is_empty()
    }

    /// Checks the sizes no type can enforce: at most [`TYPES_PER_FILTER_MAX`] types and
    /// [`TAGS_PER_FILTER_MAX`] tags.
    ///
    /// # Errors
    /// [`InvalidInput`] about `types` or `tags`.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        check_list_len(
            "types",
            "the filter",
            "types",
            self.types.len(),
            TYPES_PER_FILTER_MAX,
        )?;
        check_list_len(
            "tags",
            "the filter",
            "tags",
            self.tags.len(),
            TAGS_PER_FILTER_MAX,
        )
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.category
            .as_ref()
            .is_none_or(|c| event.stream.category() == *c)
            && types_match(&self.types, event)
            && tags_match(&self.tags, event)
    }
}

/// One item of a query: any of `types` and all of `tags` (at least one of the two given).
/// On the wire an object; unknown members are refused (a `"tag"` typo must not widen it).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct QueryItem {
    /// Any of these types (empty: any type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<EventType>,
    /// All of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

impl QueryItem {
    /// Whether `event` matches this item.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        types_match(&self.types, event) && tags_match(&self.tags, event)
    }
}

/// A DCB query: items combined with OR; no items matches every event. On the wire an
/// object; unknown members are refused.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Query {
    /// The items, combined with OR.
    pub items: Vec<QueryItem>,
}

crate::object_serde!(QueryItem);
crate::object_serde!(Query);

impl Query {
    /// The query that matches every event.
    pub fn everything() -> Self {
        Query::default()
    }

    /// A one-item query.
    pub fn item(types: Vec<EventType>, tags: Vec<Tag>) -> Self {
        Query {
            items: vec![QueryItem { types, tags }],
        }
    }

    /// Checks the rules the type system cannot: an item names types or tags (or both), and
    /// there are at most [`QUERY_ITEMS_MAX`] items, each with at most
    /// [`TYPES_PER_FILTER_MAX`] types and [`TAGS_PER_FILTER_MAX`] tags.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.items.len() > QUERY_ITEMS_MAX {
            return Err(InvalidInput::new(
                "query",
                format!(
                    "query has {} items, but at most {QUERY_ITEMS_MAX} are allowed",
                    self.items.len()
                ),
            ));
        }
        if let Some(i) = self
            .items
            .iter()
            .position(|i| i.types.is_empty() && i.tags.is_empty())
        {
            return Err(InvalidInput::new(
                "query",
                format!("query item {i} has neither types nor tags; give at least one of them"),
            ));
        }
        for (i, item) in self.items.iter().enumerate() {
            let whose = format!("query item {i}");
            check_list_len(
                "query",
                &whose,
                "types",
                item.types.len(),
                TYPES_PER_FILTER_MAX,
            )?;
            check_list_len(
                "query",
                &whose,
                "tags",
                item.tags.len(),
                TAGS_PER_FILTER_MAX,
            )?;
        }
        Ok(())
    }

    /// Whether `event` matches the query.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.items.is_empty() || self.items.iter().any(|i| i.matches(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc;

    fn tag(s: &str) -> Tag {
        Tag::new(s).unwrap()
    }
    fn ty(s: &str) -> EventType {
        EventType::new(s).unwrap()
    }

    #[test]
    fn queries_are_objects_without_unknown_members() {
        let q: Query =
            serde_json::from_str(r#"{"items": [{"types": ["A"], "tags": ["t"]}]}"#).unwrap();
        assert_eq!(q, Query::item(vec![ty("A")], vec![tag("t")]));
        for (bad, says) in [
            (
                r#"{"items": [{"types": ["A"], "tag": ["t"]}]}"#,
                "unknown field `tag`",
            ),
            (r#"{"items": [], "after": 1}"#, "unknown field `after`"),
            (r#"{"items": [[["A"], ["t"]]]}"#, "expected a JSON object"),
            (r#"[[]]"#, "expected a JSON object"),
        ] {
            let e = serde_json::from_str::<Query>(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn filter_combines_its_parts_with_and() {
        let e = doc::recorded("account-1", 1, 1, "Deposited", &["account:1"]);
        assert!(Filter::all().matches(&e));
        assert!(
            Filter::all()
                .category(Category::new("account").unwrap())
                .matches(&e)
        );
        assert!(
            !Filter::all()
                .category(Category::new("auction").unwrap())
                .matches(&e)
        );
        assert!(
            Filter::all()
                .types(vec![ty("Withdrawn"), ty("Deposited")])
                .matches(&e)
        );
        assert!(!Filter::all().types(vec![ty("Withdrawn")]).matches(&e));
        assert!(Filter::all().tags(vec![tag("account:1")]).matches(&e));
        assert!(
            !Filter::all()
                .tags(vec![tag("account:1"), tag("x")])
                .matches(&e)
        );
    }

    #[test]
    fn query_items_combine_with_or_and_tags_with_and() {
        let e = doc::recorded("user-1", 1, 1, "UserRegistered", &["username:alice", "x"]);
        assert!(Query::everything().matches(&e));
        assert!(Query::item(vec![ty("UserRegistered")], vec![tag("username:alice")]).matches(&e));
        assert!(!Query::item(vec![ty("UserRegistered")], vec![tag("username:bob")]).matches(&e));
        assert!(Query::item(vec![], vec![tag("username:alice"), tag("x")]).matches(&e));
        let q = Query {
            items: vec![
                QueryItem {
                    types: vec![ty("Other")],
                    tags: vec![],
                },
                QueryItem {
                    types: vec![],
                    tags: vec![tag("x")],
                },
            ],
        };
        assert!(q.matches(&e));
    }

    #[test]
    fn query_validation_refuses_empty_items_and_too_many() {
        assert!(Query::everything().validate().is_ok());
        assert!(
            Query {
                items: vec![QueryItem::default()]
            }
            .validate()
            .is_err()
        );
        let many = Query {
            items: vec![
                QueryItem {
                    types: vec![ty("A")],
                    tags: vec![]
                };
                QUERY_ITEMS_MAX + 1
            ],
        };
        assert!(many.validate().is_err());
    }

    #[test]
    fn filters_and_query_items_are_bounded_in_types_and_tags() {
        let types = |n: usize| (0..n).map(|i| ty(&format!("T{i}"))).collect::<Vec<_>>();
        let tags = |n: usize| (0..n).map(|i| tag(&format!("t:{i}"))).collect::<Vec<_>>();
        assert!(
            Filter::all()
                .types(types(TYPES_PER_FILTER_MAX))
                .tags(tags(TAGS_PER_FILTER_MAX))
                .validate()
                .is_ok()
        );
        let e = Filter::all()
            .types(types(TYPES_PER_FILTER_MAX + 1))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "types");
        assert!(e.message.contains("101 types"), "{e}");
        let e = Filter::all()
            .tags(tags(TAGS_PER_FILTER_MAX + 1))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "tags");
        assert!(
            Query::item(types(TYPES_PER_FILTER_MAX), tags(TAGS_PER_FILTER_MAX))
                .validate()
                .is_ok()
        );
        let e = Query::item(vec![], tags(65)).validate().unwrap_err();
        assert_eq!(e.field, "query");
        assert!(e.message.contains("query item 0 has 65 tags"), "{e}");
        assert!(
            Query::item(types(TYPES_PER_FILTER_MAX + 1), vec![])
                .validate()
                .is_err()
        );
    }
}
