//! corral-server
