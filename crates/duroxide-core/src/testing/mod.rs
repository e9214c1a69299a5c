//! Test support: history builder, canned histories and a simulated host (filled in next).
