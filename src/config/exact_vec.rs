//! Reading a config list into exactly its length (used by the model for `routes`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Most items a list reserves room for up front.
const MAX_RESERVED_ITEMS: usize = 1 << 20;

/// A list read into exactly its length, as the loader tells it: serde's own `Vec` reserves
/// at most 1 MiB up front and doubles from there, and each smaller copy of a list of 100,000
/// routes (half a kilobyte each) stays resident until the allocator purges it.
pub(super) fn exact_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ExactVec<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for ExactVec<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_RESERVED_ITEMS));
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(ExactVec(PhantomData))
}
