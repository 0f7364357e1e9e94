//! corral-testkit
