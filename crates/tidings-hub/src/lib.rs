//! The Tidings hub as a library (work in progress).
