//! `flotilla-bench`: the load benchmark tool and micro-benchmarks.
