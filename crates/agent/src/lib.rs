//! corral-agent
