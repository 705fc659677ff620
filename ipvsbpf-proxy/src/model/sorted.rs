//! A set as a sorted `Vec`, for the many small sets the proxy keeps per
//! Service (the slices of a Service, the Services claiming a virtual
//! server): almost always one element, where a `BTreeSet` allocates a
//! node for eleven.

/// A sorted, duplicate-free `Vec`. Inserts and removals are O(n): meant
/// for sets of a few elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortedVec<T>(Vec<T>);

impl<T> Default for SortedVec<T> {
    fn default() -> Self {
        SortedVec(Vec::new())
    }
}

impl<T: Ord> SortedVec<T> {
    pub fn insert(&mut self, value: T) {
        if let Err(at) = self.0.binary_search(&value) {
            self.0.insert(at, value);
        }
    }

    pub fn remove<Q>(&mut self, value: &Q)
    where
        T: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if let Ok(at) = self.0.binary_search_by(|v| v.borrow().cmp(value)) {
            self.0.remove(at);
        }
    }

    pub fn first(&self) -> Option<&T> {
        self.0.first()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::SortedVec;

    #[test]
    fn a_set_in_order() {
        let mut s = SortedVec::default();
        for v in ["b", "a", "c", "a"] {
            s.insert(v.to_string());
        }
        assert_eq!(
            s.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        s.remove("b");
        s.remove("x");
        assert_eq!(s.first().map(String::as_str), Some("a"));
        assert_eq!(s.iter().count(), 2);
        s.remove("a");
        s.remove("c");
        assert!(s.is_empty());
    }
}
