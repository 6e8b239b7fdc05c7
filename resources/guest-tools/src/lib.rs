//! Shared helpers for the rig guest programs.
