//! The builder checks the algorithms share: each returns the value if it is
//! valid and panics otherwise, with a message naming the algorithm, the
//! parameter and the value.

/// A growth factor: above 1 and finite.
pub(super) fn above_one(algorithm: &str, name: &str, value: f64) -> f64 {
    assert!(
        value > 1.0 && value.is_finite(),
        "{algorithm} {name} must be above 1, got {value}"
    );
    value
}

/// A tolerance: at least 1 and finite.
pub(super) fn at_least_one(algorithm: &str, name: &str, value: f64) -> f64 {
    assert!(
        value >= 1.0 && value.is_finite(),
        "{algorithm} {name} must be at least 1, got {value}"
    );
    value
}

/// A share of the way to move: in (0, 1].
pub(super) fn share(algorithm: &str, name: &str, value: f64) -> f64 {
    assert!(
        value > 0.0 && value <= 1.0,
        "{algorithm} {name} must be in (0, 1], got {value}"
    );
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_pass_through() {
        assert_eq!(above_one("A", "x", 1.5), 1.5);
        assert_eq!(at_least_one("A", "x", 1.0), 1.0);
        assert_eq!(share("A", "x", 1.0), 1.0);
    }

    #[test]
    #[should_panic(expected = "Vegas slow_start must be above 1, got 1")]
    fn a_growth_factor_of_one_is_refused() {
        above_one("Vegas", "slow_start", 1.0);
    }

    #[test]
    #[should_panic(expected = "Aimd tolerance must be at least 1, got inf")]
    fn an_infinite_tolerance_is_refused() {
        at_least_one("Aimd", "tolerance", f64::INFINITY);
    }

    #[test]
    #[should_panic(expected = "Gradient2 smoothing must be in (0, 1], got 0")]
    fn a_smoothing_of_zero_is_refused() {
        share("Gradient2", "smoothing", 0.0);
    }
}
