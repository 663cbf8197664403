use super::{LimitAlgorithm, Sample};

/// A limit that never moves: the algorithm behind every non-adaptive
/// limiter, and a baseline to compare adaptive ones with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed(pub usize);

impl LimitAlgorithm for Fixed {
    fn initial_limit(&self) -> usize {
        self.0
    }

    fn update(&mut self, _sample: &Sample) -> usize {
        self.0
    }
}
