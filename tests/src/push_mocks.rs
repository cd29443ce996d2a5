//! The mock push services live in their own crate (`tests/push-mock`, shared with
//! `switchboard bench --push`); re-exported here for the tests.

pub use switchboard_push_mock::*;
