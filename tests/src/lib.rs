//! Kernel-in-the-loop rig harness.
