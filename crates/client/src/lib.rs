//! corral-client
