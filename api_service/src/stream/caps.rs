//! Per-user cap on concurrent streams (per instance): each open stream holds a permit, and a
//! user past `max_per_user` gets 429 instead of another stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct StreamCaps {
    max_per_user: usize,
    open: Mutex<HashMap<i64, usize>>,
}

/// One open stream of `user`; dropping it frees the slot.
pub struct StreamPermit {
    caps: Arc<StreamCaps>,
    user: i64,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.caps.lock();
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl StreamCaps {
    pub fn new(max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_user,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit, or `None` when `user` already has `max_per_user` streams open here.
    pub fn try_open(self: &Arc<Self>, user: i64) -> Option<StreamPermit> {
        let mut open = self.lock();
        let n = open.entry(user).or_default();
        if *n >= self.max_per_user {
            if *n == 0 {
                open.remove(&user);
            }
            return None;
        }
        *n += 1;
        Some(StreamPermit {
            caps: Arc::clone(self),
            user,
        })
    }

    pub fn max_per_user(&self) -> usize {
        self.max_per_user
    }

    /// Streams open on this instance, all users together.
    pub fn open_streams(&self) -> usize {
        self.lock().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_user_separately_and_frees_on_drop() {
        let caps = StreamCaps::new(2);
        let a1 = caps.try_open(1).unwrap();
        let _a2 = caps.try_open(1).unwrap();
        assert!(caps.try_open(1).is_none());
        assert!(caps.try_open(2).is_some(), "another user is not affected");

        drop(a1);
        assert!(caps.try_open(1).is_some());
    }

    #[test]
    fn nothing_is_held_for_users_without_streams() {
        let caps = StreamCaps::new(1);
        drop(caps.try_open(7).unwrap());
        assert!(caps.lock().is_empty());
        assert_eq!(caps.open_streams(), 0);
    }
}
