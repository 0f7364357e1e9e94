//! corral-store
