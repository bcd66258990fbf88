//! A cache prefetch hint for loops over many sessions.
//!
//! A fan-out to thousands of connections spends much of its user-space time waiting for
//! each session's memory (its record, its queue) to come in from L3 or RAM, because the
//! kernel's work for the previous connection's write has pushed it out of the nearer
//! caches. Hinting the next sessions' memory a step or two ahead lets those loads overlap
//! the current write instead of following it.

/// How much of a value is hinted at most (larger values: their first lines only).
const MAX_BYTES: usize = 512;
/// The cache line size of the CPUs this hint is for.
const LINE: usize = 64;

/// Asks the CPU to start loading `value`'s memory (up to 512 bytes of it) into its
/// cache, without waiting for it. It changes nothing the program can observe, only when
/// later reads of that memory complete; on targets without a prefetch instruction it
/// does nothing.
///
/// Use it a step or two ahead in a loop that touches many separately allocated values,
/// each once, with enough work per step (a syscall) for the load to complete meanwhile.
/// See [`Session::prefetch`](super::Session::prefetch).
#[inline]
pub fn prefetch<T>(value: &T) {
    let size = std::mem::size_of::<T>().min(MAX_BYTES);
    let start = (value as *const T).cast::<i8>();
    // From the start of the cache line `value` begins in, one hint per line it covers.
    // `wrapping_offset` keeps the address derived from `value` (no integer-to-pointer
    // cast), and computing it is defined even for the part of the first line before it.
    let mut offset = -((start as usize % LINE) as isize);
    while offset < size as isize {
        hint_line(start.wrapping_offset(offset));
        offset += LINE as isize;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn hint_line(address: *const i8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has. A prefetch reads
    // nothing the program sees and never faults, whatever the address; this one lies in
    // a cache line that holds part of a live value.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(address) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn hint_line(_address: *const i8) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hinting_changes_no_value_of_any_size() {
        let unit = ();
        prefetch(&unit);
        let small = 7u8;
        prefetch(&small);
        let large = [3u64; 1000]; // larger than the hinted maximum
        prefetch(&large);
        let unaligned = &[1u8; 200][3..];
        prefetch(&unaligned);
        let boxed = Box::new(String::from("session"));
        prefetch(&*boxed);
        assert_eq!((unit, small), ((), 7));
        assert!(large.iter().all(|&v| v == 3));
        assert!(unaligned.iter().all(|&v| v == 1));
        assert_eq!(*boxed, "session");
    }
}
