//! Checks shared by the rig tests that exchange the ivshmem BAR pattern with L0 (`bar-pattern`).

use guest_tools::pattern::{
    first_bad_word, DEFAULT_PAGES, GUEST_WORD_OFFSET, IVSHMEM_GUEST_TAG, IVSHMEM_L0_TAG,
    L0_WORD_OFFSET,
};

/// Guest -> L0: the guest's words are in the ivshmem backing file `shm_after`, L0's are untouched.
pub fn assert_ivshmem_exchange(shm_after: &[u8]) {
    assert_eq!(
        first_bad_word(
            shm_after,
            IVSHMEM_GUEST_TAG,
            DEFAULT_PAGES,
            GUEST_WORD_OFFSET
        ),
        None,
        "guest's pattern missing in the ivshmem file (page, word found)"
    );
    assert_eq!(
        first_bad_word(shm_after, IVSHMEM_L0_TAG, DEFAULT_PAGES, L0_WORD_OFFSET),
        None,
        "L0's words changed"
    );
}
