//! Distributed traces across two demo processes (filled in by the distributed-traces work).
