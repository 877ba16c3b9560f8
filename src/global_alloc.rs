//! The process allocator of `hotnic` and of the limit server (`examples/limit_server.rs`, which
//! includes this file): mimalloc, called the way the standard library calls `malloc`.
//!
//! The `mimalloc` crate's allocator passes every request to `mi_malloc_aligned`, whose quick
//! path is taken only for blocks up to 1 KiB, and whose slow path over-allocates. Rust's
//! alignments are almost all at most 16, which every mimalloc block of at least that size
//! already has (mimalloc's `MI_MAX_ALIGN_SIZE`, as C's `malloc` guarantees `max_align_t`), so
//! those requests go to plain `mi_malloc` / `mi_zalloc` / `mi_realloc` here, and only larger
//! alignments (or an alignment above the size) to the aligned functions.
#![allow(unsafe_code)]

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// Alignment every mimalloc block of at least this many bytes has (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the module docs).
pub struct Mimalloc;

/// Whether a block of `size` bytes from the plain functions is aligned to `align`.
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc with at least the layout's size and alignment (the plain
// functions only where `plain` holds, see the module docs) and goes back to it through `mi_free`,
// which takes blocks from either kind of call.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI allocation calls; null on failure, as GlobalAlloc expects.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract); the new
        // block keeps the alignment (plain only where `plain` holds for the new size).
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIGNS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 4096];
    const SIZES: [usize; 12] = [1, 3, 8, 15, 16, 24, 48, 100, 1000, 1025, 5000, 70_000];

    fn assert_aligned(p: *mut u8, layout: Layout) {
        assert!(!p.is_null(), "{layout:?}");
        assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
    }

    #[test]
    fn every_block_has_its_alignment_and_keeps_its_bytes_through_realloc() {
        let a = Mimalloc;
        for align in ALIGNS {
            for size in SIZES {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; the block is used within its size and freed once.
                unsafe {
                    let mut p = a.alloc(layout);
                    assert_aligned(p, layout);
                    for i in 0..size {
                        p.add(i).write(i as u8);
                    }
                    for new_size in [size / 2 + 1, size * 3] {
                        let other = Layout::from_size_align(new_size, align).unwrap();
                        let q = a.realloc(p, layout, new_size);
                        assert_aligned(q, other);
                        let kept = size.min(new_size);
                        for i in 0..kept {
                            assert_eq!(q.add(i).read(), i as u8, "{layout:?} → {new_size}");
                        }
                        // Back to the old size, the kept bytes still in place.
                        p = a.realloc(q, other, size);
                        assert_aligned(p, layout);
                        for i in 0..kept {
                            assert_eq!(p.add(i).read(), i as u8, "{layout:?} ← {new_size}");
                        }
                        for i in kept..size {
                            p.add(i).write(i as u8);
                        }
                    }
                    a.dealloc(p, layout);
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_and_aligned() {
        let a = Mimalloc;
        for align in ALIGNS {
            for size in SIZES {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size; read within it; freed once.
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert_aligned(p, layout);
                    assert!((0..size).all(|i| p.add(i).read() == 0), "{layout:?}");
                    a.dealloc(p, layout);
                }
            }
        }
    }
}
