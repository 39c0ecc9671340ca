//! Provider call governance for the daemon: a token bucket per provider, a circuit per
//! provider, and call metrics. (Being written.)
