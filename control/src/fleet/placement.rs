//! Weighted rendezvous (highest random weight) hashing: which stream nodes an
//! image is placed on.
//!
//! Each (node, image) pair gets a pseudo-random `u` in (0, 1) from SHA-256 of
//! the node's name and the image id; the node's score is `weight / -ln(u)`.
//! The highest scores win. So an image stays on the same nodes while the set
//! of nodes is unchanged; a node that leaves moves only the images it held
//! (each to its next-best node), a node that joins takes only the images it
//! now scores highest on, and each node's share is its weight over the sum.

use sha2::Digest as _;
use uuid::Uuid;

/// What placement needs to know of a node.
pub trait Placeable {
    /// The name hashed with the image id.
    fn name(&self) -> &str;
    /// The node's relative share (0 never wins).
    fn weight(&self) -> u32;
}

impl Placeable for crate::model::StreamNode {
    fn name(&self) -> &str {
        &self.name
    }
    fn weight(&self) -> u32 {
        self.weight
    }
}

impl<T: Placeable> Placeable for &T {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn weight(&self) -> u32 {
        (**self).weight()
    }
}

/// The node's score for the image: higher wins.
pub fn score(name: &str, weight: u32, image: &Uuid) -> f64 {
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update([0u8]);
    h.update(image.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    // 53 random bits, shifted off zero: u is in (0, 1), so -ln(u) > 0.
    let bits = u64::from_be_bytes(first) >> 11;
    let u = (bits as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// The `k` best nodes for the image, best first (fewer if there are fewer
/// nodes with a weight above 0).
pub fn top<'a, N: Placeable>(nodes: &'a [N], image: &Uuid, k: usize) -> Vec<&'a N> {
    let mut scored: Vec<(f64, &N)> = nodes
        .iter()
        .filter(|n| n.weight() > 0)
        .map(|n| (score(n.name(), n.weight(), image), n))
        .collect();
    // Ties (equal scores) fall back to the name, so the order is total.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.name().cmp(b.1.name())));
    scored.into_iter().take(k).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct N(String, u32);

    impl Placeable for N {
        fn name(&self) -> &str {
            &self.0
        }
        fn weight(&self) -> u32 {
            self.1
        }
    }

    fn nodes(weights: &[u32]) -> Vec<N> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| N(format!("stream-{i}"), *w))
            .collect()
    }

    fn best<'a>(nodes: &'a [N], id: &Uuid) -> &'a str {
        top(nodes, id, 1).first().map_or("", |n| n.0.as_str())
    }

    proptest! {
        #[test]
        fn the_same_image_lands_on_the_same_node(
            weights in proptest::collection::vec(1u32..500, 1..8),
            id in any::<u128>(),
        ) {
            let n = nodes(&weights);
            let id = Uuid::from_u128(id);
            prop_assert_eq!(best(&n, &id), best(&n, &id));
            // The order of the node list does not matter.
            let mut reversed = n.clone();
            reversed.reverse();
            prop_assert_eq!(best(&n, &id), best(&reversed, &id));
        }

        #[test]
        fn removing_a_node_moves_only_its_images(
            weights in proptest::collection::vec(1u32..500, 2..8),
            gone in any::<prop::sample::Index>(),
            ids in proptest::collection::vec(any::<u128>(), 1..64),
        ) {
            let all = nodes(&weights);
            let gone = gone.index(all.len());
            let fewer: Vec<N> = all.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, n)| n.clone()).collect();
            for id in ids.into_iter().map(Uuid::from_u128) {
                let was = best(&all, &id);
                if was != all[gone].0 {
                    prop_assert_eq!(best(&fewer, &id), was);
                }
            }
        }

        #[test]
        fn adding_a_node_moves_images_only_onto_it(
            weights in proptest::collection::vec(1u32..500, 1..8),
            ids in proptest::collection::vec(any::<u128>(), 1..64),
        ) {
            let before = nodes(&weights);
            let mut after = before.clone();
            after.push(N("stream-new".into(), 100));
            for id in ids.into_iter().map(Uuid::from_u128) {
                let now = best(&after, &id);
                prop_assert!(now == best(&before, &id) || now == "stream-new");
            }
        }
    }

    #[test]
    fn shares_follow_the_weights() {
        let n = nodes(&[100, 100, 200]);
        let mut counts = [0usize; 3];
        let total = 20_000u128;
        for id in 0..total {
            let name = best(&n, &Uuid::from_u128(id.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let i = n.iter().position(|x| x.0 == name).unwrap_or(0);
            counts[i] += 1;
        }
        // Expected 25% / 25% / 50%, within a few points.
        let pct = |c: usize| c as f64 * 100.0 / total as f64;
        assert!((pct(counts[0]) - 25.0).abs() < 3.0, "{counts:?}");
        assert!((pct(counts[1]) - 25.0).abs() < 3.0, "{counts:?}");
        assert!((pct(counts[2]) - 50.0).abs() < 3.0, "{counts:?}");
    }

    #[test]
    fn k_nodes_are_distinct_best_first_and_zero_weight_never_wins() {
        let n = nodes(&[100, 0, 100, 100]);
        let id = Uuid::from_u128(42);
        let three = top(&n, &id, 3);
        assert_eq!(three.len(), 3);
        assert!(three.iter().all(|x| x.1 > 0));
        assert_eq!(three[0].0, best(&n, &id));
        assert_eq!(top(&n, &id, 10).len(), 3);
        assert!(top::<N>(&[], &id, 1).is_empty());
    }
}
