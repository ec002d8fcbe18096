//! JSON objects, and only objects, for request bodies.
//!
//! serde's derived `Deserialize` of a struct also accepts a sequence of its members in
//! order, so `[null, null, [{…}]]` would be read as an append body. Every type a request
//! carries is an object on the wire: [`object_serde!`](crate::object_serde) gives a struct
//! an implementation that accepts only a map, and refuses anything else with "expected a
//! JSON object". It goes with `#[serde(remote = "Self", deny_unknown_fields)]` on the
//! derive, which keeps serde's generated code as inherent functions for the macro to call.

/// Implements `Serialize` and `Deserialize` for a struct whose derives carry
/// `#[serde(remote = "Self")]`: serialising as derived, deserialising only from a map
/// (a JSON object), never from a sequence.
///
/// ```
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// #[serde(remote = "Self", deny_unknown_fields)]
/// struct Body {
///     after: u64,
/// }
/// concord_core::object_serde!(Body);
///
/// assert!(serde_json::from_str::<Body>(r#"{"after": 3}"#).is_ok());
/// let array = serde_json::from_str::<Body>("[3]").unwrap_err().to_string();
/// assert!(array.contains("expected a JSON object"), "{array}");
/// let typo = serde_json::from_str::<Body>(r#"{"aftr": 3}"#).unwrap_err().to_string();
/// assert!(typo.contains("unknown field `aftr`"), "{typo}");
/// ```
#[macro_export]
macro_rules! object_serde {
    ($ty:ident) => {
        impl<'de> $crate::__serde::Deserialize<'de> for $ty {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                struct Object;
                impl<'de> $crate::__serde::de::Visitor<'de> for Object {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str(concat!("a JSON object (", stringify!($ty), ")"))
                    }
                    fn visit_map<A: $crate::__serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> ::std::result::Result<$ty, A::Error> {
                        // The inherent function `remote = "Self"` generated: the derive.
                        $ty::deserialize($crate::__serde::de::value::MapAccessDeserializer::new(
                            map,
                        ))
                    }
                }
                deserializer.deserialize_map(Object)
            }
        }

        impl $crate::__serde::Serialize for $ty {
            fn serialize<S: $crate::__serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                $ty::serialize(self, serializer)
            }
        }
    };
}
