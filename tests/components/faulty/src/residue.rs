//! `remember`: what a call can see of the calls before it in the same pool
//! slot. Each call first reads every place it is about to write and reports
//! what was not the fresh instance's value there, then writes its own
//! marker into all of them:
//!
//! - a page of initialised data (part of the component's memory image),
//! - a page of zero-initialised data (`.bss`, after the image),
//! - `pages` separate host pages far up the linear memory (grown to reach
//!   them), one written page every other page, so a call dirties as many
//!   separate regions as it is asked to.
//!
//! A fresh instance finds the initial values everywhere; anything else is
//! another call's residue.

use std::ptr::addr_of_mut;

use flyte_connector_sdk::serde_json::{Value, json};

/// What the initialised page holds in a fresh instance.
const IMAGE_INITIAL: u64 = 0x5eed_0000_5eed_0000;
/// Words per host page (4 KiB).
const PAGE_WORDS: usize = 512;
const PAGE_BYTES: usize = PAGE_WORDS * 8;
/// Where the far pages start: well above anything the allocator uses for
/// a call this small.
const FAR_START: usize = 32 << 20;
const WASM_PAGE_BYTES: usize = 64 << 10;

#[repr(C, align(4096))]
struct Page([u64; PAGE_WORDS]);

static mut IN_IMAGE: Page = Page([IMAGE_INITIAL; PAGE_WORDS]);
static mut IN_BSS: Page = Page([0; PAGE_WORDS]);

/// Reads every place, reports the residue, and writes `marker` everywhere.
pub fn inspect_and_mark(marker: u64, pages: usize) -> Value {
    let mut residue = Vec::new();
    // SAFETY: the statics are only touched here, by one call at a time (a
    // component instance is single-threaded), and through raw pointers.
    unsafe {
        check_and_write(
            addr_of_mut!(IN_IMAGE).cast(),
            IMAGE_INITIAL,
            marker,
            "image",
            &mut residue,
        );
        check_and_write(addr_of_mut!(IN_BSS).cast(), 0, marker, "bss", &mut residue);
    }
    let end = FAR_START + pages * 2 * PAGE_BYTES;
    grow_to(end);
    for page in 0..pages {
        let address = FAR_START + page * 2 * PAGE_BYTES;
        // SAFETY: `grow_to` made [FAR_START, end) part of the linear memory,
        // and nothing else in the instance uses it: the allocator's heap of
        // a call this small ends far below FAR_START, and memory the
        // allocator grows later comes after `end`.
        unsafe {
            check_and_write(address as *mut u64, 0, marker, "far", &mut residue);
        }
    }
    json!(residue)
}

/// Checks every word of the page at `page` against `initial`, reporting the
/// first that differs, then writes `marker` over the whole page.
///
/// # Safety
///
/// `page` must point to a writable, page-sized, page-aligned region.
unsafe fn check_and_write(
    page: *mut u64,
    initial: u64,
    marker: u64,
    what: &str,
    residue: &mut Vec<Value>,
) {
    for word in 0..PAGE_WORDS {
        // SAFETY: within the page, per the caller.
        let found = unsafe { page.add(word).read_volatile() };
        if found != initial {
            residue.push(json!({ "where": what, "address": page as usize, "found": found }));
            break;
        }
    }
    for word in 0..PAGE_WORDS {
        // SAFETY: within the page, per the caller.
        unsafe { page.add(word).write_volatile(marker) };
    }
}

/// Grows the linear memory until it reaches `end` bytes.
fn grow_to(end: usize) {
    let have = core::arch::wasm32::memory_size(0) * WASM_PAGE_BYTES;
    if have < end {
        let more = (end - have).div_ceil(WASM_PAGE_BYTES);
        assert!(
            core::arch::wasm32::memory_grow(0, more) != usize::MAX,
            "cannot grow memory to {end} bytes"
        );
    }
}
