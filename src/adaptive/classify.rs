use super::Outcome;

/// Decides what a finished request's output says about the limit.
///
/// Implemented for closures `Fn(&T) -> Outcome`, so a custom rule is one
/// line: `|result: &Result<MyResponse, MyError>| ...`.
pub trait Classify<T> {
    /// The outcome of one request's output.
    fn classify(&self, output: &T) -> Outcome;
}

impl<T, F> Classify<T> for F
where
    F: Fn(&T) -> Outcome,
{
    fn classify(&self, output: &T) -> Outcome {
        self(output)
    }
}

/// The default for any service: a response is a success, an error is
/// overload (tower's `Elapsed` and `Overloaded`, a failed connection, a
/// refusal further in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<R, E> Classify<Result<R, E>> for DefaultClassifier {
    fn classify(&self, output: &Result<R, E>) -> Outcome {
        match output {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Overload,
        }
    }
}
