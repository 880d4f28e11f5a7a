//! nudge's one integration-test binary. Each module tests one boundary or concern; see the
//! comment at the top of each. Regression tests are named after the issue they fix.

// The embeddable API: learning, attribution, bad input, concurrency, export and erasure.
mod engine_api;
// Properties of the model's math, policies and hashing (proptest).
mod model_props;
// Decision quality: a short seeded simulation orders full nudge > global-only > random.
mod quality;
