//! Scheduler knobs. Few on purpose: the defaults follow Nomad.

/// How feasible nodes are scored against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Prefer the fullest node that still fits: keeps whole nodes free for
    /// large allocations and lets idle nodes be drained (Nomad's default).
    #[default]
    Binpack,
    /// Prefer the emptiest node: spreads load, at the cost of fragmentation.
    Spread,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub algorithm: Algorithm,
}
